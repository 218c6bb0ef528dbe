#!/usr/bin/env python3
"""Song rendering and loudness analysis against real peers, same inputs, same run.

1. Render: `djinn generate` renders a 180 s four-role song (pad, bass, lead, drums,
   mastered to the loudness contract) and fluidsynth -F renders a comparably dense 180 s
   MIDI arrangement (drums in sixteenths, eighth-note bass and lead, four-note pads every
   bar) with FluidR3_GM. Each runs REPEAT times, alternating; the ratio is the median of
   each djinn run's against the fluidsynth run right after it.
2. Loudness: `djinn analyze --loudness` and ffmpeg's ebur128 filter (peak=true) measure the
   same 10-minute file djinn generated.

    python3 clients/python/bench_render.py --djinn target/release/djinn [--repeat 3]

Exits non-zero when a target is missed: djinn at least 200x realtime, at least 10x
fluidsynth's realtime factor, and loudness analysis at least as fast as ffmpeg's.
"""

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SECONDS = 180.0
BPM = 124.0


def vlq(n):
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def track(events):
    events.sort(key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))
    body, last = b"", 0
    for tick, data in events:
        body += vlq(tick - last) + data
        last = tick
    body += vlq(0) + b"\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + body


def arrangement(path):
    """A 180 s, 124 BPM Standard MIDI File as dense as djinn's four-role song."""
    tpq = 480

    def note(events, channel, tick, length, key, velocity):
        events.append((tick, bytes([0x90 | channel, key, velocity])))
        events.append((tick + length, bytes([0x80 | channel, key, 0])))

    bars = int(SECONDS * BPM / 60 / 4) + 1
    tempo = int(60e6 / BPM)
    meta = [(0, b"\xff\x51\x03" + tempo.to_bytes(3, "big"))]
    drums, bass, pad, lead = [], [(0, bytes([0xC1, 38]))], [(0, bytes([0xC2, 89]))], [(0, bytes([0xC3, 81]))]
    chords = [[48, 51, 55, 58], [44, 48, 51, 55], [51, 55, 58, 62], [46, 50, 53, 58]]
    for bar in range(bars):
        start = bar * 4 * tpq
        for step in range(16):
            tick = start + step * tpq // 4
            if step % 4 == 0:
                note(drums, 9, tick, 60, 36, 110)
            if step in (4, 12):
                note(drums, 9, tick, 60, 39, 100)
            note(drums, 9, tick, 40, 42, 70 if step % 2 else 90)
        chord = chords[bar % 4]
        for key in chord:
            note(pad, 2, start, 4 * tpq - 10, key + 12, 70)
        for eighth in range(8):
            note(bass, 1, start + eighth * tpq // 2, tpq // 2 - 20, chord[0] - 12, 95)
            note(lead, 3, start + eighth * tpq // 2, tpq // 2 - 20, chord[eighth % 4] + 24, 80)
    header = b"MThd" + struct.pack(">IHHH", 6, 1, 5, tpq)
    Path(path).write_bytes(header + b"".join(track(t) for t in (meta, drums, bass, pad, lead)))


def timed(command):
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{command[0]} failed: {result.stderr.strip()[-400:]}")
    return elapsed, result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinn", default="target/release/djinn")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        midi = tmp / "arrangement.mid"
        arrangement(midi)
        djinn_rtf, fluid_rtf = [], []
        for i in range(args.repeat):
            elapsed, out = timed([
                args.djinn, "generate", "--json", "--seconds", str(SECONDS), "--seed", str(i + 1),
                "--profile", "deep_house", "--prompt", "deep house, supersaw, sub, arp",
                "--roles", "pad,bass,lead,drum",
                "-o", str(tmp / "djinn.wav"),
            ])
            report = json.loads(out)
            # The whole command: profiles, script, synthesis, mastering and the WAV write.
            djinn_rtf.append(SECONDS / elapsed)
            elapsed, _ = timed([
                "fluidsynth", "-ni", "-g", "0.7", "-r", "48000", "-F", str(tmp / "fluid.wav"),
                SOUNDFONT, str(midi),
            ])
            fluid_rtf.append(SECONDS / elapsed)
        djinn_med, fluid_med = statistics.median(djinn_rtf), statistics.median(fluid_rtf)
        # The host's speed drifts by tens of percent over a run, and both programs with it:
        # each djinn run is compared with the fluidsynth run right after it, and the median
        # of those ratios is the figure (the ratio of the two medians is shown beside it).
        ratio = statistics.median(d / f for d, f in zip(djinn_rtf, fluid_rtf))
        print(f"render 180 s: djinn generate {djinn_med:.0f}x realtime "
              f"(synthesis and mastering alone: {report['realtime_factor']:.0f}x), "
              f"fluidsynth -F {fluid_med:.1f}x, ratio {ratio:.1f}x "
              f"(pairs {', '.join(f'{d / f:.1f}' for d, f in zip(djinn_rtf, fluid_rtf))}; "
              f"of the medians {djinn_med / fluid_med:.1f}x)")
        print(f"  djinn's song: {report['loudness']['integrated_lufs']:.2f} LUFS, "
              f"{report['loudness']['true_peak_dbtp']:.2f} dBTP, parts {', '.join(report['recipe']['parts'])}")
        if djinn_med < 200:
            print("  target missed: 200x realtime")
            failed = True
        if ratio < 10:
            print("  target missed: 10x fluidsynth")
            failed = True

        ten = tmp / "ten.wav"
        timed([args.djinn, "generate", "--seconds", "600", "--seed", "9", "-o", str(ten)])
        ours, theirs = [], []
        for _ in range(args.repeat):
            ours.append(timed([args.djinn, "analyze", "--loudness", "--json", str(ten)])[0])
            theirs.append(timed([
                "ffmpeg", "-hide_banner", "-nostats", "-i", str(ten),
                "-af", "ebur128=peak=true", "-f", "null", "-",
            ])[0])
        ours_med, theirs_med = statistics.median(ours), statistics.median(theirs)
        print(f"loudness of 10 min: djinn analyze --loudness {ours_med:.2f} s "
              f"({600 / ours_med:.0f}x realtime), ffmpeg ebur128 {theirs_med:.2f} s "
              f"({600 / theirs_med:.0f}x), ratio {theirs_med / ours_med:.2f}x")
        if ours_med > theirs_med:
            print("  target missed: at least ffmpeg's throughput")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
