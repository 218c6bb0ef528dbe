"""A small client for djinnd, the djinn audio daemon, on pyzmq.

    from djinn_client import Djinn

    with Djinn() as djinn:
        print(djinn.call("daemon.status")["transport"])
        djinn.call("transport.set", tempo=128, key="F minor")
        for topic, event in djinn.events("transport", "profile"):
            print(event["seq"], topic, event["data"])

Requests are JSON-RPC 2.0 over a REQ socket (docs/protocol.md); events come from the PUB
socket as [topic, JSON] messages.
"""

import itertools
import json

import zmq

__all__ = ["Djinn", "DjinnError", "DjinnTimeout"]


class DjinnError(Exception):
    """The daemon answered with a JSON-RPC error."""

    def __init__(self, code, message, data=None):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.data = data


class DjinnTimeout(Exception):
    """No answer within the timeout: djinnd is not running at that endpoint."""


class Djinn:
    def __init__(self, endpoint="tcp://127.0.0.1:7700", events="tcp://127.0.0.1:7701",
                 token=None, timeout_ms=3000, context=None):
        self.endpoint = endpoint
        self.events_endpoint = events
        self.token = token
        self.timeout_ms = timeout_ms
        self._context = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._socket = None

    def _req(self):
        if self._socket is None:
            self._socket = self._context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(self.endpoint)
        return self._socket

    def call(self, method, _payload=(), **params):
        """Calls `method` with named params; returns the result or raises DjinnError."""
        result, _ = self.call_with_payload(method, _payload, **params)
        return result

    def call_with_payload(self, method, payload=(), **params):
        """Like call, with binary frames after the request; returns (result, reply frames)."""
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params:
            request["params"] = params
        if self.token is not None:
            request["token"] = self.token
        socket = self._req()
        socket.send_multipart([json.dumps(request).encode(), *payload])
        if not socket.poll(self.timeout_ms):
            # A REQ socket that missed its reply cannot send again: start afresh next time.
            socket.close()
            self._socket = None
            raise DjinnTimeout(f"no answer from djinnd at {self.endpoint} "
                               f"within {self.timeout_ms} ms")
        first, *rest = socket.recv_multipart()
        reply = json.loads(first)
        if "error" in reply:
            error = reply["error"]
            raise DjinnError(error["code"], error["message"], error.get("data"))
        return reply["result"], rest

    def events(self, *topics, timeout_ms=None):
        """Yields (topic, event) pairs; all topics when none are given.

        With timeout_ms, stops when no event arrives for that long.
        """
        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.events_endpoint)
        for topic in topics or ("",):
            socket.setsockopt_string(zmq.SUBSCRIBE, topic)
        try:
            while True:
                if timeout_ms is not None and not socket.poll(timeout_ms):
                    return
                topic, body = socket.recv_multipart()
                yield topic.decode(), json.loads(body)
        finally:
            socket.close()

    def close(self):
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
