#!/usr/bin/env python3
"""Soak: djinnd on `jackd -R -d dummy -p 64` with 16 layers for 10 minutes; prints the xruns.

The target is zero. Not part of CI (it takes ten minutes); run it on a quiet machine:

    python3 clients/python/soak.py --djinnd target/release/djinnd [--minutes 10]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jack_session import djinnd_playing, jackd  # noqa: E402

SERVER = "djinn-soak"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--period", type=int, default=64)
    args = parser.parse_args()
    with jackd(SERVER, args.period) as env, djinnd_playing(args.djinnd, env) as client:
        deadline = time.time() + args.minutes * 60
        while time.time() < deadline:
            time.sleep(min(30, max(0.0, deadline - time.time())))
            audio = client.call("daemon.status")["audio"]
            print(f"{time.strftime('%H:%M:%S')}  xruns {audio['xruns']}  "
                  f"dsp load {audio['dsp_load']:.1f} %  "
                  f"longest callback {audio['longest_callback_us']} µs", flush=True)
        xruns = client.call("daemon.status")["audio"]["xruns"]
    print(f"soak: {args.minutes:g} min at {args.period} frames, {xruns} xruns (target 0)")
    return 0 if xruns == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
