#!/usr/bin/env python3
"""JACK DSP load: djinnd with 16 layers against fluidsynth playing 16 voices, same server.

Starts a private `jackd -R -d dummy -r 48000 -p 64`, then in turn:
  1. djinnd (release) with 16 looping layers, each filtered and sending to reverb and delay;
  2. `fluidsynth -a jack` with FluidR3_GM playing a MIDI file that holds 16 notes;
and reads JACK's DSP load with jack_cpu_load for each. Prints both and the ratio
(target: djinn at most 0.5x fluidsynth).

With --cpu N every process of the run (jackd, djinnd, fluidsynth, jack_cpu_load) is held
to CPU N. On a virtual machine, waking a client's thread on the other CPU costs most of
the DSP load any client shows; on one CPU the wake-up is a plain switch, and what is left
is closer to each program's own work.

    python3 clients/python/bench_jack_load.py --djinnd target/release/djinnd [--seconds 8] [--cpu 1]
"""

import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_render import vlq  # noqa: E402
from jack_session import djinnd_playing, jackd  # noqa: E402

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SERVER = "djinn-bench-load"


def midi_file(path, seconds):
    """A type-0 SMF holding 16 notes on 16 channels (drums on 10) for `seconds`."""
    ppq = 480
    events = bytearray()
    events += b"\x00\xff\x51\x03" + (500_000).to_bytes(3, "big")  # 120 BPM
    programs = [0, 48, 49, 52, 33, 25, 40, 41, 42, 0, 56, 60, 65, 71, 73, 89]
    for ch in range(16):
        events += b"\x00" + bytes([0xC0 | ch, programs[ch]])
    for ch in range(16):
        note = 42 if ch == 9 else 36 + ch * 3
        events += b"\x00" + bytes([0x90 | ch, note, 90])
    ticks = int(seconds * 2 * ppq)
    events += vlq(ticks) + bytes([0x80, 36, 0])
    for ch in range(1, 16):
        note = 42 if ch == 9 else 36 + ch * 3
        events += b"\x00" + bytes([0x80 | ch, note, 0])
    events += b"\x00\xff\x2f\x00"
    with open(path, "wb") as f:
        f.write(b"MThd" + struct.pack(">IHHH", 6, 0, 1, ppq))
        f.write(b"MTrk" + struct.pack(">I", len(events)) + events)


def dsp_load(env, seconds):
    """Mean of jack_cpu_load's readings over `seconds`, skipping the first."""
    proc = subprocess.Popen(["jack_cpu_load"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    time.sleep(seconds + 1.2)
    proc.terminate()
    out, _ = proc.communicate(timeout=5)
    loads = [float(m) for m in re.findall(r"DSP load\s*([0-9.]+)", out)]
    if len(loads) < 2:
        raise SystemExit(f"no DSP load readings from jack_cpu_load:\n{out}")
    return sum(loads[1:]) / len(loads[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--cpu", type=int, default=None,
                        help="hold every process of the run to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        # Children inherit the affinity: the servers and clients started below run there.
        os.sched_setaffinity(0, {args.cpu})

    with jackd(SERVER, 64) as env:
        idle = dsp_load(env, 3)
        with djinnd_playing(args.djinnd, env) as client:
            time.sleep(1.0)
            layers = len(client.call("layer.list")["layers"])
            djinn_load = dsp_load(env, args.seconds)
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            song = os.path.join(tmp, "sixteen.mid")
            midi_file(song, args.seconds + 10)
            fluid = subprocess.Popen(["fluidsynth", "-ni", "-a", "jack", "-j", "-r", "48000",
                                      "-g", "0.5", SOUNDFONT, song],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(2.0)
                fluid_load = dsp_load(env, args.seconds)
            finally:
                fluid.terminate()
                fluid.wait(5)

    where = "every process on CPU " + str(args.cpu) if args.cpu is not None else "CPUs free"
    print(f"JACK DSP load at 64 frames / 48 kHz, mean over {args.seconds:.0f} s ({where})")
    print(f"{'idle server':<34}{idle:>7.2f} %")
    print(f"{'djinnd, ' + str(layers) + ' layers':<34}{djinn_load:>7.2f} %")
    print(f"{'fluidsynth, 16 voices FluidR3_GM':<34}{fluid_load:>7.2f} %")
    ratio = djinn_load / fluid_load if fluid_load > 0 else float("inf")
    print(f"ratio djinnd / fluidsynth: {ratio:.2f}x (target <= 0.5x)")
    return 0 if ratio <= 0.5 and layers == 16 else 1


if __name__ == "__main__":
    sys.exit(main())
