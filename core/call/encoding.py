"""Audio encoding in line: aiortc's per-frame Opus encode without a thread hop.

aiortc's sender encodes every outgoing frame with `loop.run_in_executor(None, encoder.encode,
…)`: for video that keeps a long encode off the loop, but an audio frame encodes in
~0.1 ms, and the hop (a queue, a worker's wake-up, the GIL handed over and back, a
future chained back onto the loop) cost the app far more than the encode: ~10 % of a
core during a call (BENCHMARKS.md). This executor runs audio encoders' `encode` at once on
the caller's thread and everything else on its pool's threads, as any ThreadPoolExecutor.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from aiortc.codecs.g711 import PcmEncoder
from aiortc.codecs.g722 import G722Encoder
from aiortc.codecs.opus import OpusEncoder

T = TypeVar("T")

AUDIO_ENCODERS = (OpusEncoder, PcmEncoder, G722Encoder)


class InlineAudioEncoding(ThreadPoolExecutor):
    def __init__(self, max_workers: int, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.inline_jobs = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if not isinstance(getattr(fn, "__self__", None), AUDIO_ENCODERS):
            return super().submit(fn, *args, **kwargs)
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the sender sees it exactly as from a worker thread
            future.set_exception(exc)
        self.inline_jobs += 1
        return future
