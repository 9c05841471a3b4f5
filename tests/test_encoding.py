"""core/call/encoding.py: audio encodes run in line on the caller's thread, all else in the pool."""

from __future__ import annotations

import asyncio
import threading

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusEncoder

from base.pcm import FRAME_SAMPLES, RATE
from core.call.encoding import InlineAudioEncoding


def _frame() -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, FRAME_SAMPLES), dtype=np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts = RATE, 0
    return frame


async def test_an_audio_encode_runs_in_line_and_anything_else_in_the_pool() -> None:
    loop = asyncio.get_running_loop()
    executor = InlineAudioEncoding(1)
    loop.set_default_executor(executor)
    caller = threading.get_ident()
    encoder = OpusEncoder()
    future = executor.submit(encoder.encode, _frame(), False)
    assert future.done()  # no thread was involved
    payloads, _timestamp = await loop.run_in_executor(None, encoder.encode, _frame(), False)
    assert payloads and isinstance(payloads[0], bytes) and executor.inline_jobs == 2
    assert await loop.run_in_executor(None, threading.get_ident) != caller
    assert executor.inline_jobs == 2


async def test_an_encoder_that_raises_fails_its_future_as_a_worker_would() -> None:
    executor = InlineAudioEncoding(1)
    with pytest.raises(AssertionError):  # what aiortc's encoder raises for a non-frame
        await asyncio.wrap_future(executor.submit(OpusEncoder().encode, "not a frame", False))
    executor.shutdown()
