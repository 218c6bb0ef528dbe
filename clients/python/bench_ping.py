#!/usr/bin/env python3
"""daemon.ping round trip: djinnd against a bare pyzmq REP server, same client, same run.

Starts djinnd (release build) and a minimal pyzmq REP server that answers the same JSON,
then times N calls from one pyzmq REQ client to each over tcp loopback and prints p50/p99
and djinnd's ratio to the bare server. Also reports djinnd's start-to-READY time and idle RSS.

    python3 clients/python/bench_ping.py --djinnd target/release/djinnd [--calls 10000]
"""

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import zmq


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_server(endpoint, ready):
    context = zmq.Context()
    rep = context.socket(zmq.REP)
    rep.bind(endpoint)
    ready.set()
    while True:
        request = json.loads(rep.recv())
        if request.get("method") == "stop":
            rep.send(b"{}")
            return
        rep.send(json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": "pong"},
                            separators=(",", ":")).encode())


def time_calls(endpoint, calls, warmup=1000):
    context = zmq.Context.instance()
    req = context.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)
    samples = []
    for i in range(warmup + calls):
        body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "daemon.ping"}).encode()
        start = time.perf_counter_ns()
        req.send(body)
        reply = req.recv()
        elapsed = time.perf_counter_ns() - start
        if i >= warmup:
            samples.append(elapsed / 1000.0)
        if i == 0:
            assert json.loads(reply)["result"] == "pong", reply
    req.close()
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p99": samples[int(len(samples) * 0.99) - 1],
        "mean": statistics.fmean(samples),
    }


def notify_ready_ms(djinnd, state_dir, port):
    """Starts djinnd with a NOTIFY_SOCKET and returns (process, ms until READY=1)."""
    sock_path = os.path.join(state_dir, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(sock_path)
    notify.settimeout(10)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJINN_")}
    env["NOTIFY_SOCKET"] = sock_path
    start = time.perf_counter()
    process = subprocess.Popen(
        [djinnd, "--control", f"tcp://127.0.0.1:{port}", "--events", f"tcp://127.0.0.1:{free_port()}",
         "--state-dir", state_dir, "--audio", "none", "--log-level", "warn"],
        env=env, stdout=subprocess.DEVNULL)
    while b"READY=1" not in notify.recv(4096):
        pass
    ready_ms = (time.perf_counter() - start) * 1000
    notify.close()
    return process, ready_ms


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()

    bare_endpoint = f"tcp://127.0.0.1:{free_port()}"
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=bare_server, args=(bare_endpoint, ready), daemon=True)
    server.start()
    ready.wait(5)

    with tempfile.TemporaryDirectory() as state_dir:
        port = free_port()
        djinnd, ready_ms = notify_ready_ms(args.djinnd, state_dir, port)
        try:
            time.sleep(0.5)
            idle_rss = rss_mib(djinnd.pid)
            # Alternate the two so that machine noise hits both alike.
            results = {"djinnd": [], "pyzmq REP": []}
            for _ in range(2):
                results["djinnd"].append(time_calls(f"tcp://127.0.0.1:{port}", args.calls // 2))
                results["pyzmq REP"].append(time_calls(bare_endpoint, args.calls // 2))
        finally:
            djinnd.terminate()
            djinnd.wait(5)
    stop = zmq.Context.instance().socket(zmq.REQ)
    stop.connect(bare_endpoint)
    stop.send(json.dumps({"method": "stop"}).encode())
    stop.recv()
    server.join(5)

    print(f"daemon.ping round trip, {args.calls} calls each, pyzmq REQ client, tcp loopback")
    print(f"{'server':<12}{'p50 µs':>10}{'p99 µs':>10}")
    summary = {}
    for name, runs in results.items():
        p50 = statistics.fmean(r["p50"] for r in runs)
        p99 = statistics.fmean(r["p99"] for r in runs)
        summary[name] = (p50, p99)
        print(f"{name:<12}{p50:>10.1f}{p99:>10.1f}")
    ratio50 = summary["djinnd"][0] / summary["pyzmq REP"][0]
    ratio99 = summary["djinnd"][1] / summary["pyzmq REP"][1]
    print(f"ratio djinnd / pyzmq REP: p50 {ratio50:.2f}x, p99 {ratio99:.2f}x (target p99 <= 1.0x)")
    print(f"start to READY: {ready_ms:.0f} ms (target < 300 ms)")
    print(f"idle RSS: {idle_rss:.1f} MiB (target < 40 MiB)")
    return 0 if ratio99 <= 1.0 and ready_ms < 300 and idle_rss < 40 else 1


if __name__ == "__main__":
    sys.exit(main())
