#!/usr/bin/env python3
"""Tempo and key analysis: `djinn analyze --tempo-key` against librosa, same files, same run.

Renders 24 twenty-second takes of a small band (kit, fingered bass, chords on piano,
electric piano, strings or guitar) with fluidsynth and FluidR3_GM, across 70-175 BPM, every
tonic in major and minor. It times, file by file, the whole `djinn analyze --tempo-key
--json` command (process start, decode, tempo, beats and key), then the full `djinn
analyze` (loudness, spectral features, role and the quality assessment too), then all the
files through one `djinn analyze --tempo-key` command (several files run on all cores),
then librosa's `beat_track` plus `chroma_cqt` on each file (loading included, in-process:
no interpreter start or import counted; run last, because numpy's OpenBLAS threads spin on
after each call and would take a core from whatever ran next); and prints the total times,
their ratios, and
how many tempi (within 1 BPM) and keys (librosa's chroma matched against the same
Krumhansl-Kessler profiles) each got right.

librosa comes from PyPI, for this comparison only (`make bench` makes the virtualenv):

    target/bench-venv/bin/python clients/python/bench_analysis.py --djinn target/release/djinn
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

import librosa
import numpy as np

from bench_render import track
from bench_stretch import render_take

NOTES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
MAJOR = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]
MINOR = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]


def band(path, bpm, tonic, minor, bars, program):
    """The test suite's band: chords (I-vi-IV-V, or i-VI-iv-V), bass roots, kit."""
    ppq = 480
    progression = ([(0, (0, 3, 7)), (8, (0, 4, 7)), (5, (0, 3, 7)), (7, (0, 4, 7))] if minor
                   else [(0, (0, 4, 7)), (9, (0, 3, 7)), (5, (0, 4, 7)), (7, (0, 4, 7))])
    notes = []  # (start beat, length in beats, channel, key)
    for bar in range(bars):
        start = bar * 4
        root, triad = progression[bar % 4]
        for interval in triad:
            pc = (tonic + root + interval) % 12
            key = 60 + pc - (12 if pc > 6 else 0)
            notes += [(start + half, 1.9, 0, key) for half in (0, 2)]
        notes += [(start + b, 0.45, 1, 36 + (tonic + root) % 12) for b in (0, 1.5, 2, 3)]
        for beat in range(4):
            notes.append((start + beat, 0.25, 9, 36 if beat % 2 == 0 else 38))
            notes += [(start + beat + off, 0.2, 9, 42) for off in (0, 0.5)]
    events = [(0, b"\xff\x51\x03" + round(60_000_000 / bpm).to_bytes(3, "big")),
              (0, bytes([0xC0, program])), (0, bytes([0xC1, 33]))]
    for start, length, channel, key in notes:
        events.append((round(start * ppq), bytes([0x90 | channel, key, 100])))
        events.append((round((start + length) * ppq), bytes([0x80 | channel, key, 0])))
    with open(path, "wb") as f:
        f.write(b"MThd" + bytes([0, 0, 0, 6, 0, 0, 0, 1]) + ppq.to_bytes(2, "big"))
        f.write(track(events))


def corpus(tmp):
    cases = []
    programs = [0, 4, 48, 24]
    for i in range(24):
        bpm = round(70 + 105 * i / 23, 1)
        tonic, minor = (i * 7) % 12, i % 2 == 1
        name = f"{NOTES[tonic]} {'minor' if minor else 'major'}"
        mid, wav = os.path.join(tmp, f"{i}.mid"), os.path.join(tmp, f"{i}.wav")
        band(mid, bpm, tonic, minor, max(4, round(bpm / 12)), programs[i % 4])
        render_take(mid, wav)
        cases.append((wav, bpm, name))
    return cases


def kk_key(chroma):
    best = None
    for tonic in range(12):
        for profile, scale in ((MAJOR, "major"), (MINOR, "minor")):
            rotated = np.roll(profile, tonic)
            r = np.corrcoef(chroma, rotated)[0, 1]
            if best is None or r > best[0]:
                best = (r, f"{NOTES[tonic]} {scale}")
    return best[1]


def librosa_analysis(path):
    y, sr = librosa.load(path, sr=None, mono=True)
    tempo, _beats = librosa.beat.beat_track(y=y, sr=sr)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr).mean(axis=1)
    return float(np.atleast_1d(tempo)[0]), kk_key(chroma)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinn", default="target/release/djinn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = corpus(tmp)
        ours = theirs = full = 0.0
        right = {"djinn": [0, 0], "librosa": [0, 0]}
        # djinn's passes first: numpy's OpenBLAS threads keep spinning for a while after
        # each librosa call, and a djinn run right after one would lose a core to them.
        for wav, bpm, key in cases:
            start = time.perf_counter()
            out = subprocess.run([args.djinn, "--json", "analyze", "--tempo-key", wav],
                                 check=True, capture_output=True)
            ours += time.perf_counter() - start
            report = json.loads(out.stdout)
            our_bpm = (report.get("tempo") or {}).get("bpm") or 0.0
            our_key = (report.get("key") or {}).get("key")
            right["djinn"][0] += abs(our_bpm - bpm) <= 1
            right["djinn"][1] += our_key == key
        for wav, _, _ in cases:
            start = time.perf_counter()
            subprocess.run([args.djinn, "--json", "analyze", wav], check=True,
                           capture_output=True)
            full += time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([args.djinn, "--json", "analyze", "--tempo-key"]
                       + [wav for wav, _, _ in cases], check=True, capture_output=True)
        batch = time.perf_counter() - start
        librosa_analysis(cases[0][0])  # warm librosa's caches (filters, JIT) first
        for wav, bpm, key in cases:
            start = time.perf_counter()
            their_bpm, their_key = librosa_analysis(wav)
            theirs += time.perf_counter() - start
            right["librosa"][0] += abs(their_bpm - bpm) <= 1
            right["librosa"][1] += their_key == key
        n = len(cases)
        print(f"{n} fluidsynth takes of 20 s, 70-175 BPM, major and minor")
        print(f"djinn analyze --tempo-key:     {ours:7.2f} s  tempo {right['djinn'][0]}/{n}"
              f"  key {right['djinn'][1]}/{n}")
        print(f"librosa beat_track+chroma_cqt: {theirs:7.2f} s  tempo {right['librosa'][0]}/{n}"
              f"  key {right['librosa'][1]}/{n}")
        print(f"djinn analyze (everything):    {full:7.2f} s")
        print(f"djinn analyze --tempo-key, all {n} in one command: {batch:7.2f} s")
        print(f"tempo and key: djinn is {theirs / ours:.1f}x librosa's speed a file at a time,"
              f" {theirs / batch:.1f}x in one command; the full analysis {theirs / full:.1f}x")


if __name__ == "__main__":
    main()
