"""The assistant's ear, voice and mind, shared by every call of one server.

Recognition is blocking and thread-confined: it runs on one dedicated worker thread
that creates the recognizer and does every decode, 20 ms at a time as a call's audio
arrives (listen()), so that the loop never waits long for the GIL and only the tail is
left when the turn ends. Synthesis owns its own thread. Both are warmed up at start so
the first turn is as fast as the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from server.realtime.responder import Answer

log = logging.getLogger(__name__)

RATE = 48000


class Listening:
    """One utterance being recognised on the worker thread while its audio arrives.

    Used from the event loop: feed() queues a frame for the worker and returns at once;
    finish() waits for the frames still queued, then the tail. cancel() or finish()
    must end every Listening (each holds a pair of decoders until then).
    """

    def __init__(self, executor: ThreadPoolExecutor, recognizer: Any) -> None:
        self._executor = executor
        # The worker runs jobs in order, so every later job finds the utterance begun.
        self._utterance: Future[Any] = executor.submit(recognizer.begin, RATE)
        self._failure: BaseException | None = None
        self._ended = False

    def feed(self, pcm: np.ndarray) -> None:
        if not self._ended:
            self._executor.submit(self._feed, pcm)

    async def finish(self) -> Any:
        """The Recognition (text, accepted, score, elapsed_ms) of everything fed."""
        self._ended = True
        return await asyncio.wrap_future(self._executor.submit(self._finish))

    def cancel(self) -> None:
        if not self._ended:
            self._ended = True
            self._executor.submit(self._cancel)

    # ---- on the worker thread ----

    def _feed(self, pcm: np.ndarray) -> None:
        if self._failure is not None:
            return
        try:
            self._utterance.result().feed(pcm)
        except Exception as exc:  # noqa: BLE001 - kept for finish(), which raises it to the call
            self._failure = exc

    def _finish(self) -> Any:
        utterance = self._utterance.result()
        if self._failure is not None:
            utterance.cancel()
            raise self._failure
        return utterance.finish()

    def _cancel(self) -> None:
        if self._utterance.exception() is None:
            self._utterance.result().cancel()


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

    def listen(self) -> Listening:
        """Start recognising an utterance of int16 mono 48 kHz audio as it arrives."""
        return Listening(self._executor, self._recognizer)

    async def recognize(self, pcm: np.ndarray) -> Any:
        """A Recognition for a whole utterance of int16 mono 48 kHz audio that was not listened to."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._recognizer.recognize, pcm, RATE)

    @property
    def responder(self) -> Any:
        """The mind (server.realtime.responder.Responder): its tool requests, for calls with tools."""
        return self._responder

    def answer(self, heard: str | None, conversation: Sequence[dict[str, str]]) -> Answer:
        return self._responder.answer(heard, conversation)

    async def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        return await self._synthesizer.synthesize(text, voice)

    async def close(self) -> None:
        self._synthesizer.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
