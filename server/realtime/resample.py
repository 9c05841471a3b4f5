"""Sample-rate conversion of int16 mono audio through libswresample (PyAV).

Used by recognition (48 kHz WebRTC audio → the decoder's 16 kHz) and synthesis
(espeak's 22,050 Hz → 48 kHz). libswresample low-pass filters properly and takes
~1 ms for 2 s of audio.
"""

from __future__ import annotations

import logging

import av
import numpy as np

log = logging.getLogger(__name__)


def resample_int16(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """int16 mono samples at `from_rate` → int16 mono samples at `to_rate`."""
    samples = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
    if from_rate == to_rate or len(samples) == 0:
        return samples
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = from_rate
    # A fresh resampler per call: no state (or delay) carries over between utterances.
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    chunks = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
