"""Shared set-up of the JACK benchmarks: a private realtime jackd, and djinnd on it playing
16 filtered layers that send to reverb and delay."""

import contextlib
import math
import os
import struct
import subprocess
import tempfile
import time

from djinn_client import Djinn

GROUPS = ["drums", "bass", "music", "voice"]
FILTERS = ["lowpass", "highpass", "bandpass"]


def jack_env(server):
    """The environment of a JACK client of `server`, without DJINN_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJINN_")}
    env.update(JACK_DEFAULT_SERVER=server, JACK_NO_START_SERVER="1")
    return env


@contextlib.contextmanager
def jackd(server, period):
    """`jackd -R -d dummy -r 48000 -p PERIOD` under `server`; yields the client environment."""
    process = subprocess.Popen(["jackd", "-n", server, "-R", "-d", "dummy", "-r", "48000",
                                "-p", str(period)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        yield jack_env(server)
    finally:
        process.terminate()
        process.wait(5)


@contextlib.contextmanager
def djinnd_playing(djinnd, env, layers=16):
    """djinnd on the server of `env` with `layers` looping layers; yields a client."""
    with tempfile.TemporaryDirectory() as tmp:
        control, events = f"ipc://{tmp}/control", f"ipc://{tmp}/events"
        process = subprocess.Popen([djinnd, "--control", control, "--events", events,
                                    "--state-dir", tmp, "--audio", "jack", "--log-level", "warn"],
                                   env=env, stdout=subprocess.DEVNULL)
        try:
            client = Djinn(control, events)
            for _ in range(50):
                try:
                    if client.call("daemon.status")["audio"]["state"] == "running":
                        break
                except Exception:
                    time.sleep(0.1)
            for i in range(layers):
                freq = 55.0 * (i + 1)
                frames = b"".join(
                    struct.pack("<ff", 0.04 * math.sin(2 * math.pi * freq * n / 48000), 0.0)
                    for n in range(48000))
                client.call("layer.add", [frames], quantize="now", group=GROUPS[i % 4],
                            filter=FILTERS[i % 3], cutoff_hz=400 + 300 * i, resonance=0.3,
                            reverb_send=0.3, delay_send=0.2)
            yield client
        finally:
            process.terminate()
            process.wait(5)
