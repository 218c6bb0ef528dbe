#!/usr/bin/env python3
"""Soak: djinnd on `jackd -R -d dummy -p 64` with 16 layers for 10 minutes; prints the xruns.

The target is zero. Not part of CI (it takes ten minutes); run it on a quiet machine:

    python3 clients/python/soak.py --djinnd target/release/djinnd [--minutes 10]
"""

import argparse
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from djinn_client import Djinn  # noqa: E402

SERVER = "djinn-soak"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--period", type=int, default=64)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJINN_")}
    env.update(JACK_DEFAULT_SERVER=SERVER, JACK_NO_START_SERVER="1")
    jackd = subprocess.Popen(["jackd", "-n", SERVER, "-R", "-d", "dummy", "-r", "48000",
                              "-p", str(args.period)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            control, events = f"ipc://{tmp}/control", f"ipc://{tmp}/events"
            djinnd = subprocess.Popen([args.djinnd, "--control", control, "--events", events,
                                       "--state-dir", tmp, "--audio", "jack", "--log-level", "warn"],
                                      env=env, stdout=subprocess.DEVNULL)
            try:
                client = Djinn(control, events)
                for _ in range(50):
                    try:
                        if client.call("daemon.status")["audio"]["state"] == "running":
                            break
                    except Exception:
                        time.sleep(0.1)
                for i in range(16):
                    frames = b"".join(
                        struct.pack("<ff", 0.04 * math.sin(2 * math.pi * 55 * (i + 1) * n / 48000), 0.0)
                        for n in range(48000))
                    client.call("layer.add", [frames], quantize="now",
                                group=["drums", "bass", "music", "voice"][i % 4],
                                filter="lowpass", cutoff_hz=500 + 200 * i,
                                reverb_send=0.3, delay_send=0.2)
                deadline = time.time() + args.minutes * 60
                while time.time() < deadline:
                    time.sleep(min(30, max(0.0, deadline - time.time())))
                    audio = client.call("daemon.status")["audio"]
                    print(f"{time.strftime('%H:%M:%S')}  xruns {audio['xruns']}  "
                          f"dsp load {audio['dsp_load']:.1f} %  "
                          f"longest callback {audio['longest_callback_us']} µs", flush=True)
                xruns = client.call("daemon.status")["audio"]["xruns"]
            finally:
                djinnd.terminate()
                djinnd.wait(5)
    finally:
        jackd.terminate()
        jackd.wait(5)
    print(f"soak: {args.minutes:g} min at {args.period} frames, {xruns} xruns (target 0)")
    return 0 if xruns == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
