#!/usr/bin/env python3
"""Time-stretch speed: `djinn stretch` against rubberband-cli on the same file, same run.

Renders a 60 s drum-and-piano arrangement with fluidsynth and FluidR3_GM at 120 BPM, then
alternates `djinn stretch --bpm 128 --from-bpm 120` and `rubberband -T 120:128` (R3
"finer" with -3 and --engine finer; R2 "faster" with -2 and --engine faster), `--repeat`
times each, and prints the median wall times and their ratio (below 1: djinn is faster).
rubberband-cli writes the input's sample format, djinn 32-bit float.

    python3 clients/python/bench_stretch.py --djinn target/release/djinn [--repeat 3]
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from bench_render import vlq

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"


def arrangement(path, seconds, bpm=120):
    """Kick, snare and hats on channel 10 and piano chords on channel 1, as a type-0 SMF."""
    ppq = 480
    events = []
    eighths = int(seconds * bpm / 60 * 2)
    for e in range(eighths):
        t = e * ppq // 2
        events.append((t, 0x99, 42))
        if e % 8 in (0, 4, 5):
            events.append((t, 0x99, 36))
        if e % 8 in (2, 6):
            events.append((t, 0x99, 38))
        if e % 4 == 0:
            root = [57, 53, 60, 55][(e // 8) % 4]
            events.extend((t, 0x90, root + i) for i in (0, 3, 7))
    track = bytearray([0, 0xFF, 0x51, 3]) + int(60_000_000 / bpm).to_bytes(3, "big")
    # Note-ons at their times, note-offs a sixteenth later, all in time order.
    timeline = [(t, 1, status, note, 96) for t, status, note in events]
    timeline += [(t + ppq // 4, 0, status - 0x10, note, 0) for t, status, note in events]
    last = 0
    for t, _, status, note, velocity in sorted(timeline):
        track += vlq(t - last) + bytes([status, note, velocity])
        last = t
    track += bytes([0, 0xFF, 0x2F, 0])
    with open(path, "wb") as f:
        f.write(b"MThd" + bytes([0, 0, 0, 6, 0, 0, 0, 1]) + ppq.to_bytes(2, "big"))
        f.write(b"MTrk" + len(track).to_bytes(4, "big") + bytes(track))


def render_take(mid, wav):
    """Renders a MIDI file to a 48 kHz WAV with fluidsynth and FluidR3_GM."""
    subprocess.run(["fluidsynth", "-ni", "-g", "0.7", "-r", "48000", "-F", wav, SOUNDFONT, mid],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def take(tmp, seconds):
    """The drums-and-piano arrangement of `seconds`, rendered by fluidsynth into `tmp`;
    returns the WAV's path."""
    mid, wav = os.path.join(tmp, "take.mid"), os.path.join(tmp, "take.wav")
    arrangement(mid, seconds)
    render_take(mid, wav)
    return wav


def timed(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinn", default="target/release/djinn")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wav = take(tmp, args.seconds)
        out = os.path.join(tmp, "out.wav")
        print(f"{args.seconds:.0f} s fluidsynth take, 120 -> 128 BPM, median of {args.repeat}")
        for engine, flag in (("finer", "-3"), ("faster", "-2")):
            ours, theirs = [], []
            for _ in range(args.repeat):
                ours.append(timed([args.djinn, "stretch", wav, "-o", out, "--bpm", "128",
                                   "--from-bpm", "120", "--engine", engine]))
                theirs.append(timed(["rubberband", flag, "-q", "-T", "120:128", wav,
                                     out]))
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"{engine:>6}: djinn {a:.2f} s ({args.seconds / a:.0f}x realtime), "
                  f"rubberband-cli {b:.2f} s ({args.seconds / b:.0f}x): {a / b:.2f}x")


if __name__ == "__main__":
    main()
