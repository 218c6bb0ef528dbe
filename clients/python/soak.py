#!/usr/bin/env python3
"""Soak: djinnd on `jackd -R -d dummy -p 64` with 16 layers for 10 minutes; prints the xruns.

The target is zero. Not part of CI (it takes ten minutes); run it on a quiet machine:

    python3 clients/python/soak.py --djinnd target/release/djinnd [--minutes 10]

With --reference PROBE it first runs the same server for the same time with only
djinn-jack-probe on it (a client that does next to nothing) and prints the xruns the server
reported then: what the host alone costs, to set beside djinnd's.

    python3 clients/python/soak.py --djinnd target/release/djinnd \\
        --reference target/release/djinn-jack-probe
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jack_session import djinnd_playing, jackd  # noqa: E402

SERVER = "djinn-soak"


def reference_xruns(probe, period, seconds):
    """The xruns a server at `period` reports over `seconds` with only the probe on it."""
    with jackd(SERVER, period) as env:
        run = subprocess.run([probe, "--seconds", str(seconds)], env=env, text=True,
                             capture_output=True, timeout=seconds + 60)
    for line in reversed(run.stdout.splitlines()):
        if line.startswith("{") and "xruns" in line:
            return json.loads(line)["xruns"]
    raise SystemExit(f"no xrun count from {probe} (exit {run.returncode}):\n"
                     f"{run.stdout}{run.stderr}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--period", type=int, default=64)
    parser.add_argument("--reference", metavar="PROBE",
                        help="djinn-jack-probe: first soak the server with it alone")
    args = parser.parse_args()
    reference = None
    if args.reference:
        reference = reference_xruns(args.reference, args.period, args.minutes * 60)
        print(f"reference: {args.minutes:g} min at {args.period} frames with only "
              f"djinn-jack-probe, {reference} xruns", flush=True)
    with jackd(SERVER, args.period) as env, djinnd_playing(args.djinnd, env) as client:
        deadline = time.time() + args.minutes * 60
        while time.time() < deadline:
            time.sleep(min(30, max(0.0, deadline - time.time())))
            audio = client.call("daemon.status")["audio"]
            print(f"{time.strftime('%H:%M:%S')}  xruns {audio['xruns']}  "
                  f"dsp load {audio['dsp_load']:.1f} %  "
                  f"longest callback {audio['longest_callback_us']} µs", flush=True)
        xruns = client.call("daemon.status")["audio"]["xruns"]
    print(f"soak: {args.minutes:g} min at {args.period} frames, {xruns} xruns (target 0)"
          + (f"; the probe alone: {reference}" if reference is not None else ""))
    return 0 if xruns == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
