#!/usr/bin/env python3
"""JACK DSP load: djinnd with 16 layers against fluidsynth playing 16 voices, same server.

Starts a private `jackd -R -d dummy -r 48000 -p 64`, then in turn:
  1. `jack_simple_client` (one sine): what waking any client costs on this server;
  2. djinnd (release) with 16 looping layers, each filtered and sending to reverb and delay;
  3. `fluidsynth -a jack` with FluidR3_GM playing a MIDI file that holds 16 notes;
and reads JACK's DSP load with jack_cpu_load for each, --rounds times in turn (this
host's load readings move by a factor of two from one minute to the next). Prints each
round and the medians: the ratio (target: djinn at most 0.5x fluidsynth), and the ratio
of what each program adds to the simple client's load: its own work, without the wake-up
every client pays.

With --cpu N every process of the run (jackd, djinnd, fluidsynth, jack_cpu_load) is held
to CPU N. On a virtual machine, waking a client's thread on the other CPU costs most of
the DSP load any client shows; on one CPU the wake-up is a plain switch, and what is left
is closer to each program's own work.

    python3 clients/python/bench_jack_load.py --djinnd target/release/djinnd [--seconds 8] \
        [--rounds 3] [--cpu 1]
"""

import argparse
import os
import re
import statistics
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


def client_load(cmd, env, seconds, settle):
    """The DSP load with the program `cmd` on the server, `settle` seconds after its start."""
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        return dsp_load(env, seconds)
    finally:
        process.terminate()
        process.wait(5)
        time.sleep(0.5)


def one_round(args, env, song):
    """One reading of each program, in turn: (simple client, djinnd, fluidsynth, layers)."""
    floor = client_load(["jack_simple_client"], env, args.seconds, 1.0)
    with djinnd_playing(args.djinnd, env) as client:
        time.sleep(1.0)
        layers = len(client.call("layer.list")["layers"])
        djinn_load = dsp_load(env, args.seconds)
    time.sleep(0.5)
    fluid_load = client_load(["fluidsynth", "-ni", "-a", "jack", "-j", "-r", "48000",
                              "-g", "0.5", SOUNDFONT, song], env, args.seconds, 2.0)
    return floor, djinn_load, fluid_load, layers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--djinnd", default="target/release/djinnd")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="readings of each program, in turn; medians are compared")
    parser.add_argument("--cpu", type=int, default=None,
                        help="hold every process of the run to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        # Children inherit the affinity: the servers and clients started below run there.
        os.sched_setaffinity(0, {args.cpu})

    where = "every process on CPU " + str(args.cpu) if args.cpu is not None else "CPUs free"
    print(f"JACK DSP load at 64 frames / 48 kHz, mean over {args.seconds:.0f} s a reading, "
          f"{args.rounds} rounds ({where})")
    print(f"{'':<8}{'simple client':>15}{'djinnd':>10}{'fluidsynth':>12}"
          f"{'ratio':>9}{'above simple':>14}")
    rounds = []
    with jackd(SERVER, 64) as env, tempfile.TemporaryDirectory() as tmp:
        idle = dsp_load(env, 3)
        song = os.path.join(tmp, "sixteen.mid")
        midi_file(song, args.seconds + 10)
        for r in range(args.rounds):
            floor, djinn_load, fluid_load, layers = one_round(args, env, song)
            ratio = djinn_load / fluid_load if fluid_load > 0 else float("inf")
            net = (max(djinn_load - floor, 0.0) / (fluid_load - floor)
                   if fluid_load > floor else float("inf"))
            rounds.append((floor, djinn_load, fluid_load, ratio, net, layers))
            print(f"round {r + 1:<2}{floor:>13.2f} %{djinn_load:>8.2f} %{fluid_load:>10.2f} %"
                  f"{ratio:>8.2f}x{net:>13.2f}x", flush=True)

    median = [statistics.median(column) for column in zip(*rounds)]
    floor, djinn_load, fluid_load, ratio, net, _ = median
    layers = min(r[5] for r in rounds)
    print(f"{'idle server':<34}{idle:>7.2f} %")
    print(f"{'jack_simple_client (one sine)':<34}{floor:>7.2f} %  (median)")
    print(f"{'djinnd, ' + str(layers) + ' layers':<34}{djinn_load:>7.2f} %  (median)")
    print(f"{'fluidsynth, 16 voices FluidR3_GM':<34}{fluid_load:>7.2f} %  (median)")
    print(f"ratio djinnd / fluidsynth: {ratio:.2f}x, median of the rounds (target <= 0.5x)")
    print(f"the simple client alone / fluidsynth: {floor / fluid_load:.2f}x"
          if fluid_load > 0 else "the simple client alone / fluidsynth: -")
    print(f"above the simple client, djinnd / fluidsynth: {net:.2f}x, median of the rounds")
    return 0 if ratio <= 0.5 and layers == 16 else 1


if __name__ == "__main__":
    sys.exit(main())
