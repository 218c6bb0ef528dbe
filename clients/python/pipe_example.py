#!/usr/bin/env python3
"""A djinn pipe-mode processor: reads audio blocks on stdin, writes them back on stdout.

djinnd runs it for pipe mode (fx.pipe.set) and sends the JACK inputs through it, once the
operator names it in the configuration (clients pick commands by name, never send them):

    [pipe.commands]
    quieter = "python3 /opt/djinn/clients/python/pipe_example.py --gain -6"

    djinn raw fx.pipe.set '{"name": "quieter"}'

Framing, both ways, for every block: a 16-byte little-endian header (b"DJNP", the block's
sequence number, its frame count and the sample rate, each a u32), then that many
interleaved stereo float32 frames. Answer every block with the same header and as many
frames, in time; djinn plays the input dry while an answer is late and restarts a command
that dies, stalls or answers with the wrong length.
"""

import argparse
import array
import struct
import sys

HEADER = struct.Struct("<4sIII")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gain", type=float, default=0.0, help="gain in dB (default 0: unchanged)")
    parser.add_argument("--swap", action="store_true", help="swap left and right")
    args = parser.parse_args()
    gain = 10.0 ** (args.gain / 20.0)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = source.read(HEADER.size)
        if len(header) < HEADER.size:
            return 0
        magic, _sequence, frames, _rate = HEADER.unpack(header)
        if magic != b"DJNP":
            print("pipe_example: not a djinn pipe stream", file=sys.stderr)
            return 1
        samples = array.array("f")
        samples.frombytes(source.read(frames * 8))
        if sys.byteorder == "big":
            samples.byteswap()
        if gain != 1.0:
            samples = array.array("f", (s * gain for s in samples))
        if args.swap:
            samples[0::2], samples[1::2] = samples[1::2], samples[0::2]
        if sys.byteorder == "big":
            samples.byteswap()
        sink.write(header)
        sink.write(samples.tobytes())
        sink.flush()


if __name__ == "__main__":
    sys.exit(main())
