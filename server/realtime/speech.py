"""The assistant's ear, voice and mind, shared by every call of one server.

Recognition is blocking and thread-confined: it runs on one dedicated worker thread
that creates the recognizer and does every decode. Synthesis owns its own thread.
Both are warmed up at start so the first turn is as fast as the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from server.realtime.responder import Answer

log = logging.getLogger(__name__)

RATE = 48000


class SpeechEngine:
    def __init__(self, executor: ThreadPoolExecutor, responder: Any, synthesizer: Any) -> None:
        self._executor = executor
        self._responder = responder
        self._synthesizer = synthesizer
        self._recognizer: Any = None

    @classmethod
    async def start(cls, name: str = "Sandra") -> SpeechEngine:
        # Imported here: echo mode and the HTTP tests never load the speech stack.
        from server.realtime import asr, responder, tts

        the_responder = responder.Responder(name=name)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandra-asr")
        engine = cls(executor, the_responder, tts.Synthesizer())
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, engine._create_recognizer, asr.Recognizer, the_responder.phrases)
            await engine.synthesize("Hello.")
        except BaseException:
            await engine.close()
            raise
        return engine

    def _create_recognizer(self, factory: Any, phrases: Sequence[str]) -> None:
        self._recognizer = factory(phrases)
        # A first decode loads what the decoder loads lazily; low noise, not digital zeros.
        warm = (np.random.default_rng(0).standard_normal(RATE // 2) * 30).astype(np.int16)
        self._recognizer.recognize(warm, RATE)

    async def recognize(self, pcm: np.ndarray) -> Any:
        """A Recognition (text, accepted, score, elapsed_ms) for int16 mono 48 kHz audio."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._recognizer.recognize, pcm, RATE)

    @property
    def responder(self) -> Any:
        """The mind (server.realtime.responder.Responder): its tool requests, for calls with tools."""
        return self._responder

    def answer(self, heard: str | None, conversation: Sequence[dict[str, str]]) -> Answer:
        return self._responder.answer(heard, conversation)

    async def synthesize(self, text: str) -> np.ndarray:
        return await self._synthesizer.synthesize(text)

    async def close(self) -> None:
        self._synthesizer.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
