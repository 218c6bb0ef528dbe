#!/usr/bin/env python3
"""Following MIDI clock: djinn against jack_mclk_dump, on the same jack_midi_clock stream.

Starts a private `jackd -d dummy -r 48000 -p 256`, `jack_midi_clock -b BPM -J JITTER` driven
by JACK transport, and connects its output to djinn (djinnd, `source = "midi"`), to
jack_mclk_dump (the reference follower shipped with jack_midi_clock) and to djinn-jack-probe
(which timestamps every tick and djinn's output to the frame). For each jitter level it
plays from the top for a while, launching a click on every other bar, and prints:

  settle    beats from the clock's Start until the tempo estimate stays within ±0.1 BPM of
            the clock's tempo for the rest of the run ("never" if it does not)
  spread    max - min of the estimate over the second half of the run, BPM
  phase     launch phase error against the clock's own bar tick, ms (median / worst):
            djinn's clicks as heard; for the reference, where it would put the bar from the
            tick before and its filtered tempo (it launches nothing itself)

    python3 clients/python/bench_clock.py --djinnd target/release/djinnd \\
        --probe target/release/djinn-jack-probe [--bpm 123.4] [--seconds 90]
"""

import argparse
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from djinn_client import Djinn  # noqa: E402
from jack_session import jack_env  # noqa: E402

SERVER = "djinn-bench-clock"
RATE = 48000
BAR_TICKS = 96


def lines_of(process, sink):
    """Collects a child's stdout lines on a thread."""
    def pump():
        for line in process.stdout:
            sink.append((time.monotonic(), line))
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def transport(env, command):
    subprocess.run(["jack_transport", "-s", SERVER], input=command + "\n", text=True,
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_port(env, port, seconds=5.0):
    """Waits until `port` exists on the private server (a client registers it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ports = subprocess.run(["jack_lsp", "-s", SERVER], env=env, capture_output=True,
                               text=True).stdout
        if port in ports.split():
            return
        time.sleep(0.05)


def settle_beats(series, bpm, start_frame, beat_frames):
    """Beats from the start until every later estimate is within ±0.1 BPM (None: never)."""
    settled = None
    for frame, tempo in series:
        if abs(tempo - bpm) > 0.1:
            settled = None
        elif settled is None:
            settled = frame
    if settled is None:
        return None
    return max(0.0, (settled - start_frame) / beat_frames)


def spread(series):
    half = [t for _, t in series[len(series) // 2:]]
    return max(half) - min(half) if half else float("nan")


def fmt_settle(beats):
    return "never" if beats is None else f"{beats:.2f}"


def one_run(args, env, djinn, jitter):
    clock = subprocess.Popen(["jack_midi_clock", "-b", str(args.bpm), "-d", "0.2"]
                             + (["-J", str(jitter)] if jitter else []),
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reference = probe = None
    try:
        wait_for_port(env, "jack_midi_clock:mclk_out")
        # NOTE: jack_mclk_dump rewrites one status line with carriage returns and buffers
        # its output when it is not on a terminal: unbuffered, and read line by line on \r.
        reference = subprocess.Popen(["stdbuf", "-o0", "jack_mclk_dump"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        ref_lines = []
        lines_of(reference, ref_lines)
        probe = subprocess.Popen([args.probe, "--midi", "jack_midi_clock:mclk_out", "--audio",
                                  "djinn:drums_L", "--threshold", "0.25",
                                  "--seconds", str(args.seconds + 10)],
                                 env=env, stdout=subprocess.PIPE, text=True)
        probe_lines = []
        lines_of(probe, probe_lines)
        for _ in range(100):
            if probe_lines:
                break
            time.sleep(0.05)
        wait_for_port(env, "jack_mclk_dump:mclk_in")
        for target in ["djinn:clock_in", "jack_mclk_dump:mclk_in"]:
            subprocess.run(["jack_connect", "-s", SERVER, "jack_midi_clock:mclk_out", target],
                           env=env, check=True)
        djinn.call("transport.set", source="internal")
        djinn.call("transport.set", source="midi")
        transport(env, "locate 0")
        time.sleep(0.06)
        transport(env, "play")
        # djinn's estimate, sampled with the transport frame it belongs to.
        series = []
        click = b"".join(struct.pack("<ff", v, v) for v in [0.5] + [0.0] * 4799)
        started = time.monotonic()
        next_click = started + 2.0
        while time.monotonic() - started < args.seconds:
            status = djinn.call("daemon.status")
            following = status["audio"]["clock"]
            if following["lock"] != "idle" and status["transport"]["rolling"]:
                series.append((time.monotonic(), following["tempo"]))
            if time.monotonic() >= next_click:
                djinn.call("layer.add", [click], quantize="bar", group="drums", loop=False)
                next_click += 2 * 4 * 60.0 / args.bpm
            # Close reading while the estimate settles, then at an easier pace.
            time.sleep(0.002 if time.monotonic() - started < 3.0 else 0.02)
        transport(env, "stop")
        time.sleep(0.3)
    finally:
        for process in (probe, reference, clock):
            if process:
                process.terminate()
                process.wait(5)

    events = [json.loads(l) for _, l in probe_lines if l.startswith("{")]
    start = [e["frame"] for e in events if e.get("midi") == [0xFA]][-1]
    ticks = [e["frame"] for e in events if e.get("midi") == [0xF8] and e["frame"] > start]
    onsets = [e["frame"] for e in events if "onset" in e]
    # A client that misses a cycle misses its ticks: count them by the gaps, as djinn
    # does, and leave out a bar line whose tick the probe missed.
    typical = statistics.median(b - a for a, b in zip(ticks, ticks[1:]))
    index, bars = 0, []
    for k, tick in enumerate(ticks):
        if k:
            index += max(1, round((tick - ticks[k - 1]) / typical))
        if index % BAR_TICKS == 0:
            bars.append(tick)
    beat_frames = 60.0 * RATE / args.bpm
    # djinn's series is in wall time; the probe's in frames. Map wall time to frames from
    # the probe's own arrival times of the ticks (close enough for settling in beats).
    tick_wall = [(w, json.loads(l)["frame"]) for w, l in probe_lines
                 if l.startswith("{") and json.loads(l).get("midi") == [0xF8]]
    def frame_at(wall):
        best = min(tick_wall, key=lambda p: abs(p[0] - wall))
        return best[1] + (wall - best[0]) * RATE
    # A reading stands for the last tick djinn had heard before it, as the reference's
    # lines do.
    def heard(frame):
        return max((t for t in ticks if t <= frame), default=ticks[0])
    djinn_series = [(heard(frame_at(w)), t) for w, t in series]
    djinn_phase = [min(abs(o - b) for b in bars) * 1000.0 / RATE for o in onsets]

    # The reference prints frames on a count of its own: match its lines to the probe's
    # ticks by order, from its own Start.
    # Its first line after Start has no estimate yet ("??"); it still stands for a tick.
    ref_tempi = []
    for _, line in ref_lines:
        if "start" in line and "EVENT" in line:
            ref_tempi = []
        elif "CLK" in line:
            m = re.search(r"flt:\s*([\d.]+)\[BPM\]", line)
            ref_tempi.append(float(m.group(1)) if m else None)
    ref = [(t, v) for t, v in zip(ticks, ref_tempi) if v is not None]
    ref_phase = []
    for k in range(BAR_TICKS, min(len(ticks), len(ref_tempi) + 1), BAR_TICKS):
        if ref_tempi[k - 1] is None:
            continue
        predicted = ticks[k - 1] + 60.0 * RATE / (24.0 * ref_tempi[k - 1])
        ref_phase.append(abs(predicted - ticks[k]) * 1000.0 / RATE)
    return {
        "jitter": jitter,
        "djinn": (settle_beats(djinn_series, args.bpm, ticks[0], beat_frames),
                  spread(djinn_series), djinn_phase),
        "reference": (settle_beats(ref, args.bpm, ticks[0], beat_frames), spread(ref),
                      ref_phase),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--probe", default="target/release/djinn-jack-probe")
    parser.add_argument("--bpm", type=float, default=123.4)
    parser.add_argument("--seconds", type=float, default=90.0)
    args = parser.parse_args()
    env = jack_env(SERVER)
    jackd = subprocess.Popen(["jackd", "-n", SERVER, "-R", "-d", "dummy", "-r", str(RATE),
                              "-p", "256"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    rows = []
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "djinn.toml")
            with open(config, "w") as f:
                f.write('[transport]\nsource = "midi"\n')
            control, events = f"ipc://{tmp}/control", f"ipc://{tmp}/events"
            daemon = subprocess.Popen([args.djinnd, "--config", config, "--control", control,
                                       "--events", events, "--state-dir", tmp, "--audio",
                                       "jack", "--log-level", "warn"],
                                      env=env, stdout=subprocess.DEVNULL)
            try:
                djinn = Djinn(control, events, timeout_ms=5000)
                for _ in range(100):
                    try:
                        if djinn.call("daemon.status")["audio"]["state"] == "running":
                            break
                    except Exception:
                        pass
                    time.sleep(0.1)
                for jitter in (0, 5, 10):
                    rows.append(one_run(args, env, djinn, jitter))
            finally:
                daemon.terminate()
                daemon.wait(5)
    finally:
        jackd.terminate()
        jackd.wait(5)

    print(f"jack_midi_clock at {args.bpm} BPM, {args.seconds:.0f} s a run; "
          "djinn | jack_mclk_dump")
    print(f"{'jitter':>6}  {'settle to ±0.1 BPM (beats)':>28}  {'spread (BPM)':>15}  "
          f"{'launch phase error, median/worst (ms)':>40}")
    for row in rows:
        d_settle, d_spread, d_phase = row["djinn"]
        r_settle, r_spread, r_phase = row["reference"]
        phase = lambda p: (f"{statistics.median(p):.3f}/{max(p):.3f}" if p else "-")
        print(f"{row['jitter']:>5}%  {fmt_settle(d_settle):>13} | {fmt_settle(r_settle):<12}"
              f"  {d_spread:>6.3f} | {r_spread:<6.3f}  {phase(d_phase):>19} | {phase(r_phase)}")


if __name__ == "__main__":
    main()
