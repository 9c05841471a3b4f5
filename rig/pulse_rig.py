"""A private PulseAudio server with virtual devices, for tests that use real sound streams.

Layout (../shared/TESTING.md): a null sink `spk` (the app's speaker; we record its
monitor) and a null sink `micsrc` whose monitor is remapped as the source `mic` (the
app's microphone; we play into `micsrc`). Each null sink keeps one low-latency silent
stream open, or the sink works in ~2 s blocks and sound arrives late and in lumps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 48000
REQUIRED_TOOLS = ("pulseaudio", "pactl", "pacat", "parec")


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


class PulseRig:
    def __init__(self, runtime_dir: Path, *, speaker_only: bool = False) -> None:
        # speaker_only: one sink and nothing else, so when it goes there is nowhere to move streams to
        self.speaker_only = speaker_only
        self.runtime_dir = runtime_dir
        self.socket = runtime_dir / "native"
        self.server = f"unix:{self.socket}"
        self._keepalive: list[subprocess.Popen] = []
        self._saved_env: dict[str, str | None] = {}

    @property
    def env(self) -> dict[str, str]:
        return {"PULSE_SERVER": self.server, "PULSE_RUNTIME_PATH": str(self.runtime_dir)}

    def _run(self, *args: str) -> str:
        return subprocess.run(args, check=True, capture_output=True, text=True, timeout=20, env={**os.environ, **self.env}).stdout

    def start(self) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "HOME": str(self.runtime_dir), "XDG_RUNTIME_DIR": str(self.runtime_dir)}
        modules = [f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
                   f"--load=module-null-sink sink_name=spk rate={RATE} channels=1"]
        if not self.speaker_only:
            modules += [f"--load=module-null-sink sink_name=micsrc rate={RATE} channels=1",
                        "--load=module-remap-source master=micsrc.monitor source_name=mic"]
        subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n", "--log-target=stderr", *modules],
                       check=True, capture_output=True, timeout=20, env=env)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("PulseAudio did not open its socket")
            time.sleep(0.05)
        self._run("pactl", "set-default-sink", "spk")
        if not self.speaker_only:
            self._run("pactl", "set-default-source", "mic")
        for sink in ("spk",) if self.speaker_only else ("spk", "micsrc"):
            self._keepalive.append(subprocess.Popen(
                ["pacat", "--playback", f"--device={sink}", "--latency-msec=20", "--rate=48000", "--channels=1", "/dev/zero"],
                env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for key, value in self.env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        time.sleep(2.0)  # let the null sinks settle into low-latency scheduling

    def stop(self) -> None:
        for proc in self._keepalive:
            proc.terminate()
            proc.wait(timeout=5)
        self._keepalive.clear()
        subprocess.run(["pactl", "exit"], env={**os.environ, **self.env}, capture_output=True, timeout=10)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def play_into_mic(self, samples: np.ndarray) -> subprocess.Popen:
        """Start playing int16 mono 48 kHz samples into the virtual microphone."""
        return play_pcm(self.env, "micsrc", RATE, samples)

    def record_speaker(self) -> "SpeakerRecording":
        return SpeakerRecording(self.env)

    def module_index(self, name_fragment: str) -> str | None:
        for line in self._run("pactl", "list", "short", "modules").splitlines():
            if name_fragment in line:
                return line.split("\t", 1)[0]
        return None

    def unload_module(self, index: str) -> None:
        self._run("pactl", "unload-module", index)


def play_pcm(env: dict[str, str], sink: str, rate: int, samples: np.ndarray, channels: int = 1) -> subprocess.Popen:
    """Start playing int16 mono samples (copied to every channel) into a sink."""
    proc = subprocess.Popen(
        ["pacat", "--playback", f"--device={sink}", "--latency-msec=20", f"--rate={rate}", f"--channels={channels}",
         "--format=s16le"],
        stdin=subprocess.PIPE, env={**os.environ, **env},
    )
    data = np.repeat(np.asarray(samples, dtype="<i2")[:, None], channels, axis=1).tobytes()

    def feed() -> None:  # pacat reads at playback speed: never block the caller's event loop on it
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    return proc


class SpeakerRecording:
    """Records what is played on the speaker sink (its monitor), as int16 mono 48 kHz."""

    def __init__(self, env: dict[str, str], device: str = "spk.monitor", rate: int = RATE, channels: int = 1) -> None:
        self._channels = channels
        self._proc = subprocess.Popen(
            ["parec", f"--device={device}", "--latency-msec=20", f"--rate={rate}", f"--channels={channels}",
             "--format=s16le"],
            stdout=subprocess.PIPE, env={**os.environ, **env},
        )
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while chunk := self._proc.stdout.read(1920):
            self._chunks.append(chunk)

    def samples(self) -> np.ndarray:
        raw = b"".join(self._chunks)
        raw = raw[: len(raw) // (2 * self._channels) * 2 * self._channels]
        return np.frombuffer(raw, dtype="<i2")[:: self._channels]

    def stop(self) -> np.ndarray:
        self._proc.terminate()
        self._proc.wait(timeout=5)
        self._reader.join(timeout=5)
        return self.samples()


def tone(freq: float, seconds: float, amplitude: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)


def dominant_frequency(samples: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    return path


# --- devices that misbehave: suspended, unplugged and replugged, 44.1 kHz stereo ------------------

def suspend(rig: PulseRig, kind: str, name: str, suspended: bool) -> None:
    """`pactl suspend-source|suspend-sink NAME 1|0`: what a laptop's suspend does to a device."""
    rig._run("pactl", f"suspend-{kind}", name, "1" if suspended else "0")


def unplug(rig: PulseRig, name_fragment: str) -> Callable[[], None]:
    """Unload the module whose arguments contain name_fragment; returns how to plug it back
    (the same module with the same arguments, so the device comes back under its name)."""
    for line in rig._run("pactl", "list", "short", "modules").splitlines():
        index, module, args = (line.split("\t") + ["", ""])[:3]
        if name_fragment in args:
            rig._run("pactl", "unload-module", index)
            return lambda: rig._run("pactl", "load-module", module, *args.split())
    raise KeyError(f"no PulseAudio module with {name_fragment!r} in its arguments")


@dataclass(frozen=True)
class NativeDevices:
    """A null sink `speaker` and a source `mic` (remapped from the null sink `feed`'s
    monitor) at rate/channels: a card that is not 48 kHz mono."""

    rig: PulseRig
    speaker: str
    feed: str
    mic: str
    rate: int
    channels: int

    def play_into_mic(self, samples: np.ndarray) -> subprocess.Popen:
        """int16 mono samples at self.rate, copied to every channel, played into the mic."""
        return play_pcm(self.rig.env, self.feed, self.rate, samples, self.channels)

    def record_speaker(self) -> "SpeakerRecording":
        """The speaker's monitor at its own rate and channels (channel 0 returned)."""
        return SpeakerRecording(self.rig.env, device=f"{self.speaker}.monitor", rate=self.rate, channels=self.channels)

    def remove(self) -> None:
        for fragment in (f"source_name={self.mic}", f"sink_name={self.feed}", f"sink_name={self.speaker}"):
            unplug(self.rig, fragment)


def add_native_devices(rig: PulseRig, rate: int = 44100, channels: int = 2, prefix: str = "cd") -> NativeDevices:
    """Load a speaker and a microphone that work at rate/channels (kept busy like the others)."""
    speaker, feed, mic = f"{prefix}spk", f"{prefix}feed", f"{prefix}mic"
    for sink in (speaker, feed):
        rig._run("pactl", "load-module", "module-null-sink", f"sink_name={sink}", f"rate={rate}", f"channels={channels}")
        rig._keepalive.append(subprocess.Popen(
            ["pacat", "--playback", f"--device={sink}", "--latency-msec=20", f"--rate={rate}", f"--channels={channels}",
             "/dev/zero"], env={**os.environ, **rig.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    rig._run("pactl", "load-module", "module-remap-source", f"master={feed}.monitor", f"source_name={mic}",
             f"rate={rate}", f"channels={channels}")
    time.sleep(2.0)  # as in start(): let the new null sinks settle into low-latency scheduling
    return NativeDevices(rig, speaker, feed, mic, rate, channels)


class EchoPath:
    """An acoustic echo for the rig: the speaker's monitor looped into the microphone.

    As laptop speakers and microphone are: the answer comes back `latency_ms` later at
    about `gain_db`, optionally over room noise at `noise_dbfs`. ``remove`` undoes it."""

    def __init__(self, rig: PulseRig, *, latency_ms: int = 60, gain_db: float = -6.0,
                 noise_dbfs: float | None = -50.0) -> None:
        self._rig = rig
        self.module = rig._run("pactl", "load-module", "module-loopback", "source=spk.monitor", "sink=micsrc",
                               f"latency_msec={latency_ms}", "source_dont_move=true", "sink_dont_move=true").strip()
        self._set_loopback_volume(gain_db)
        self._noise: subprocess.Popen | None = None
        self._stop = threading.Event()
        if noise_dbfs is not None:
            self._noise = subprocess.Popen(
                ["pacat", "--playback", "--device=micsrc", "--latency-msec=20", "--rate=48000", "--channels=1",
                 "--format=s16le"], stdin=subprocess.PIPE, env={**os.environ, **rig.env})
            threading.Thread(target=self._feed_noise, args=(noise_dbfs,), daemon=True).start()

    def _set_loopback_volume(self, gain_db: float) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the loopback's stream appears a moment after the module
            for block in self._rig._run("pactl", "list", "sink-inputs").split("\n\n"):
                lines = {line.strip().split(":", 1)[0]: line.split(":", 1)[-1].strip() for line in block.splitlines()}
                if lines.get("Owner Module") == self.module:
                    index = block.split("#", 1)[1].split()[0]
                    self._rig._run("pactl", "set-sink-input-volume", index, f"{gain_db}dB")
                    return
            time.sleep(0.05)
        raise RuntimeError(f"module-loopback {self.module} shows no sink input")

    def _feed_noise(self, dbfs: float) -> None:
        rng = np.random.default_rng(7)
        assert self._noise is not None and self._noise.stdin is not None
        try:
            while not self._stop.is_set():  # pacat reads at playback speed
                block = rng.standard_normal(RATE // 5) * 32768 * 10 ** (dbfs / 20)
                self._noise.stdin.write(np.clip(block, -32768, 32767).astype("<i2").tobytes())
        except (BrokenPipeError, ValueError):
            pass

    def remove(self) -> None:
        self._stop.set()
        if self._noise is not None:
            self._noise.terminate()
            self._noise.wait(timeout=5)
        self._rig.unload_module(self.module)
