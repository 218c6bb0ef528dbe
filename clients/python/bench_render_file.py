#!/usr/bin/env python3
"""Render-by-prompt speed: `djinn render` on a 3-minute fluidsynth take, on one core.

Renders a drum-and-piano arrangement with fluidsynth and FluidR3_GM, then runs
`djinn render --prompt "loud clean modern mix"` (and "tight low end, brighter top end")
pinned to one core with taskset, `--repeat` times each, and prints the median realtime
factor of the whole command (decode, chain, loudness solve, WAV write) and of the chain
alone (as the report gives it).

    python3 clients/python/bench_render_file.py --djinn target/release/djinn [--repeat 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

from bench_stretch import take


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinn", default="target/release/djinn")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wav = take(tmp, args.seconds)
        out = os.path.join(tmp, "out.wav")
        print(f"{args.seconds:.0f} s fluidsynth take, one core, median of {args.repeat}")
        for prompt in ("loud clean modern mix", "tight low end, brighter top end"):
            whole, chain = [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                result = subprocess.run(["taskset", "-c", "0", args.djinn, "--json", "render",
                                         wav, "-o", out, "--prompt", prompt],
                                        check=True, capture_output=True)
                whole.append(time.perf_counter() - start)
                chain.append(json.loads(result.stdout)["render_seconds"])
            print(f"{prompt!r:36} whole command {args.seconds / statistics.median(whole):6.0f}x"
                  f"  chain {args.seconds / statistics.median(chain):6.0f}x realtime")


if __name__ == "__main__":
    main()
