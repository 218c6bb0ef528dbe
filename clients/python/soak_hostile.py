#!/usr/bin/env python3
"""Hostile soak: a DJ set plays while clients attack djinnd; prints RSS, xruns and pings.

For ten minutes (by default), against djinnd on a private `jackd -d dummy` server:
ten subscribers that never read, floods of idle connections, malformed and oversized
ZMTP frames, and one-shot layers carrying NaN samples, while a client pings twice a second.
Every 30 s it prints the daemon's RSS, xruns, events dropped and pings answered; at the end
it says whether RSS stayed flat and djinnd survived. Not part of CI (it takes ten minutes):

    python3 clients/python/soak_hostile.py --djinnd target/release/djinnd [--minutes 10]
"""

import argparse
import math
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from djinn_client import Djinn  # noqa: E402
from jack_session import jackd  # noqa: E402

SERVER = "djinn-hostile-soak"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def greeting():
    g = b"\xff" + b"\0" * 8 + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\0")
    return g.ljust(64, b"\0")


def ready(socket_type):
    body = b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return bytes([0x04, len(body)]) + body


def zmtp(port, socket_type=None):
    """A raw connection that has exchanged greetings (and READY when asked)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(greeting())
    theirs = b""
    while len(theirs) < 64:
        chunk = s.recv(64 - len(theirs))
        if not chunk:
            raise ConnectionError("closed during the greeting")
        theirs += chunk
    if socket_type:
        s.sendall(ready(socket_type))
        s.recv(256)
    return s


class Attack(threading.Thread):
    """Runs `step` until stopped, counting what it did and what failed."""

    def __init__(self, name, step, pause):
        super().__init__(name=name, daemon=True)
        self.step, self.pause = step, pause
        self.done = self.failed = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.step()
                self.done += 1
            except Exception:
                self.failed += 1
            self.stop.wait(self.pause)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    rng = random.Random(7)
    control_port, events_port = free_port(), free_port()
    control = f"tcp://127.0.0.1:{control_port}"
    with jackd(SERVER, 256) as env, tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen(
            [args.djinnd, "--control", control, "--events", f"tcp://127.0.0.1:{events_port}",
             "--state-dir", tmp, "--audio", "jack", "--log-level", "warn"],
            env=env, stdout=subprocess.DEVNULL)
        client = Djinn(control)
        for _ in range(100):
            try:
                if client.call("daemon.status")["audio"]["state"] == "running":
                    break
            except Exception:
                time.sleep(0.1)
        client.call("dj.start")

        stuck = [zmtp(events_port, b"SUB") for _ in range(10)]
        for s in stuck:
            s.sendall(b"\x00\x01\x01")  # subscribe to every topic, then never read

        def flood():
            idle = []
            for _ in range(300):
                try:
                    idle.append(socket.create_connection(("127.0.0.1", control_port), timeout=2))
                except OSError:
                    break
            time.sleep(3)
            for s in idle:
                s.close()

        def malformed():
            port = rng.choice([control_port, events_port])
            s = zmtp(port)
            if rng.random() < 0.5:
                s.sendall(bytes([rng.choice([0x02, 0x06])]) + struct.pack(">Q", rng.choice(
                    [1 << 30, 1 << 40, (1 << 64) - 1])))
            else:
                s.sendall(bytes(rng.getrandbits(8) for _ in range(512)))
            s.close()

        nan_client = Djinn(control)

        def nan_layer():
            frames = [0.2 * math.sin(2 * math.pi * 440 * n / 48000) for n in range(4800)]
            frames[rng.randrange(len(frames))] = float("nan")
            payload = b"".join(struct.pack("<ff", f, f) for f in frames)
            nan_client.call("layer.add", [payload], quantize="now", gain=0.01)

        pings = {"answered": 0, "missed": 0}
        ping_client = Djinn(control)

        def ping():
            try:
                ping_client.call("daemon.ping")
                pings["answered"] += 1
            except Exception:
                pings["missed"] += 1
                raise

        attacks = [Attack("flood", flood, 5.0), Attack("malformed", malformed, 0.05),
                   Attack("nan", nan_layer, 2.0), Attack("ping", ping, 0.5)]
        for attack in attacks:
            attack.start()
        started = time.time()
        deadline = started + args.minutes * 60
        samples = []
        while time.time() < deadline and process.poll() is None:
            time.sleep(min(30, max(0.0, deadline - time.time())))
            if process.poll() is not None:
                break
            rss = rss_kib(process.pid)
            samples.append((time.time() - started, rss))
            try:
                status = client.call("daemon.status")
                audio, control_status = status["audio"], status["control"]
                line = (f"xruns {audio['xruns']}  events dropped "
                        f"{control_status['events_dropped']}  subscribers "
                        f"{control_status['subscribers']}")
            except Exception as e:
                line = f"status failed: {e}"
            print(f"{time.strftime('%H:%M:%S')}  RSS {rss / 1024:.1f} MiB  {line}  pings "
                  f"{pings['answered']} answered, {pings['missed']} missed", flush=True)
        for attack in attacks:
            attack.stop.set()
        crashed = process.poll() is not None
        if not crashed:
            process.terminate()
            process.wait(10)
        for s in stuck:
            s.close()
    first = max((rss for t, rss in samples if t <= 90), default=0)
    last = max((rss for t, rss in samples if t >= samples[-1][0] - 90), default=0)
    flat = last <= first * 1.2 + 20 * 1024
    print(f"RSS over the first 90 s at most {first / 1024:.1f} MiB, over the last 90 s at most "
          f"{last / 1024:.1f} MiB: {'flat' if flat else 'GROWING'}")
    print(f"djinnd {'CRASHED' if crashed else 'survived'}; pings {pings['answered']} answered, "
          f"{pings['missed']} missed; attacks: "
          + ", ".join(f"{a.name} {a.done} ({a.failed} refused)" for a in attacks))
    sys.exit(0 if flat and not crashed else 1)


if __name__ == "__main__":
    main()
