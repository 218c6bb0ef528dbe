#!/usr/bin/env python3
"""The DJ over a long set: djinnd (release) plays 30 minutes of audio with the offline driver
in --fast mode under each shipped DJ script, and this prints, per style:

  - decisions made and the director's decision time (phrase cue to checked actions), p50/p99;
  - loops rendered for phrase boundaries and the least time any had to spare before its bar,
    in bars at realtime pace (target: at least 1);
  - launches the mixer skipped as late (layer.missed; target: 0);
  - how long the 30 minutes took to play here.

    python3 clients/python/bench_director.py --djinnd target/release/djinnd [--minutes 30]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from djinn_client import Djinn  # noqa: E402

STYLES = ["deep_house", "techno_minimal", "jungle_dnb", "downtempo_ambient", "hip_hop"]


def one_set(djinnd, style, minutes, seed):
    with tempfile.TemporaryDirectory() as tmp:
        control = f"ipc://{tmp}/control"
        events = f"ipc://{tmp}/events"
        log = open(os.path.join(tmp, "log"), "w")
        proc = subprocess.Popen(
            [djinnd, "--control", control, "--events", events, "--state-dir", f"{tmp}/state",
             "--audio", "offline", "--fast", "--profile", style, "--log-level", "warn"],
            stdout=log, stderr=log)
        try:
            with Djinn(control, events, timeout_ms=30000) as djinn:
                for _ in range(100):
                    try:
                        djinn.call("daemon.ping")
                        break
                    except Exception:
                        time.sleep(0.05)
                started = time.time()
                first = djinn.call("dj.start", seed=seed)
                tempo = djinn.call("transport.get")["tempo"]
                bars = int(minutes * tempo / 4)
                end_bar = first["decision"]["bar"] + bars
                while djinn.call("transport.get")["position"]["bar"] < end_bar:
                    time.sleep(0.2)
                wall = time.time() - started
                status = djinn.call("daemon.status")
                djinn.call("dj.stop")
                director = status["director"]
                return {
                    "style": style,
                    "bars": bars,
                    "decisions": director["phrase"],
                    "decide_ms": director["decide_ms"],
                    "loops": director["loops"],
                    "min_lead_bars": director["min_lead_bars"],
                    "missed": status["audio"]["missed"],
                    "wall_s": round(wall, 1),
                }
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    worst_p99 = 0.0
    worst_lead = None
    missed = 0
    for style in args.styles.split(","):
        r = one_set(args.djinnd, style, args.minutes, args.seed)
        print(json.dumps(r))
        worst_p99 = max(worst_p99, r["decide_ms"].get("p99", 0.0))
        if r["min_lead_bars"] is not None:
            worst_lead = r["min_lead_bars"] if worst_lead is None else min(worst_lead, r["min_lead_bars"])
        missed += r["missed"]
    print(f"director: decision p99 {worst_p99:.3f} ms (target < 5), least lead "
          f"{worst_lead:.2f} bars (target >= 1), layer.missed {missed} (target 0)")


if __name__ == "__main__":
    main()
