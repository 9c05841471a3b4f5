"""Energy-based voice activity detection for hands-free turns (server_vad).

Pure: 20 ms frames in, at most one event out per frame, positions counted in
samples so tests need no clock. Speech starts after a few loud frames in a row (a
click is not speech) and stops after silence_ms of quiet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from base.pcm import level_dbfs

# OpenAI's threshold is 0..1 (default 0.5); map it onto a dBFS gate: 0.5 → -45 dBFS,
# well above dither (-60) and well below normal speech (-30 … -15).
_DB_AT_ZERO = -70.0
_DB_SPAN = 50.0


def threshold_dbfs(threshold: float) -> float:
    return _DB_AT_ZERO + _DB_SPAN * threshold


class VadKind(enum.Enum):
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"


@dataclass(frozen=True)
class VadEvent:
    kind: VadKind
    sample: int  # position in the stream where speech began or ended


class EnergyVad:
    def __init__(self, *, threshold: float = 0.5, silence_ms: int = 500, start_ms: int = 60,
                 rate: int = 48000) -> None:
        self._gate_db = threshold_dbfs(threshold)
        self._silence_samples = rate * silence_ms // 1000
        self._start_samples = rate * start_ms // 1000
        self._position = 0
        self._in_speech = False
        self._loud_run = 0  # samples of consecutive loud frames
        self._quiet_run = 0  # samples of consecutive quiet frames while in speech

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def reset(self) -> None:
        """Forget a half-heard turn (the buffer was cleared); positions keep counting."""
        self._in_speech = False
        self._loud_run = self._quiet_run = 0

    def push(self, frame: np.ndarray) -> VadEvent | None:
        loud = level_dbfs(frame) >= self._gate_db
        self._position += frame.size
        if not self._in_speech:
            self._loud_run = self._loud_run + frame.size if loud else 0
            if self._loud_run >= self._start_samples:
                self._in_speech = True
                self._quiet_run = 0
                return VadEvent(VadKind.SPEECH_STARTED, self._position - self._loud_run)
            return None
        self._quiet_run = 0 if loud else self._quiet_run + frame.size
        if self._quiet_run >= self._silence_samples:
            self._in_speech = False
            self._loud_run = 0
            return VadEvent(VadKind.SPEECH_STOPPED, self._position - self._quiet_run)
        return None
