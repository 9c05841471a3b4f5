"""Audio decoding in line: each received packet decoded on the loop, with no thread hop.

aiortc decodes received media on a thread of its own: the receiver puts every encoded
frame in a queue, the thread wakes, decodes, and hands each frame back to the loop with
`run_coroutine_threadsafe` (a future, a wake-up of the loop through its self-pipe and a
task per frame). An Opus frame decodes in ~50 µs; the hop costs far more, fifty times a
second. This puts a stand-in for that queue on an audio receiver before it starts: `put`
decodes at once (Opus in mono, base/opus.py; other codecs with aiortc's decoders) and
queues the frames on the track. aiortc's thread still starts, waits on the stand-in
until the receiver stops, and then ends the track as it always did.

A private hook, guarded the way base/jitter_buffer.py guards its own: if aiortc's
receiver no longer looks as expected, installing raises RuntimeError naming the version.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Protocol

import aiortc
import av
from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCRtpReceiver
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame

from base.audio_receivers import on_audio_receiver
from base.opus import MIME_TYPE, MonoOpusDecoder

log = logging.getLogger(__name__)

_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"


class _Decoder(Protocol):
    def decode(self, encoded_frame: JitterFrame) -> list[Any]: ...


def _decoder_for(codec: RTCRtpCodecParameters) -> _Decoder:
    if codec.mimeType.lower() == MIME_TYPE:
        return MonoOpusDecoder()
    decoder: _Decoder = get_decoder(codec)
    return decoder


class InlineDecoding:
    """Stands in for aiortc's decoder queue: `put` decodes on the caller's (the loop's) thread."""

    def __init__(self, frames: asyncio.Queue[Any]) -> None:
        self._frames = frames
        self._stopped = threading.Event()
        self._codec_name: str | None = None
        self._decoder: _Decoder | None = None
        self.decoded = 0
        self.failed = 0

    def put(self, item: tuple[RTCRtpCodecParameters, JitterFrame] | None) -> None:
        if item is None:  # the receiver stops: release aiortc's waiting thread, which ends the track
            self._stopped.set()
            return
        codec, encoded_frame = item
        if self._decoder is None or codec.name != self._codec_name:
            self._decoder, self._codec_name = _decoder_for(codec), codec.name
        try:
            frames = self._decoder.decode(encoded_frame)
        except av.FFmpegError as exc:  # as aiortc does: keep the decoder's state, drop this frame
            self.failed += 1
            log.warning("could not decode a received %s frame: %s", codec.name, exc)
            return
        for frame in frames:
            self._frames.put_nowait(frame)
        self.decoded += 1

    def get(self, block: bool = True, timeout: float | None = None) -> None:
        """aiortc's decoder thread: nothing to decode, so it waits for the stop and is told None."""
        self._stopped.wait(timeout if block else 0)
        return None


def install_inline_decoding(receiver: RTCRtpReceiver) -> InlineDecoding:
    """Decode this audio receiver's frames in line. Call it before the receiver starts
    (from the peer connection's "track" event); raises RuntimeError if aiortc changed."""
    version = getattr(aiortc, "__version__", "unknown")
    current = getattr(receiver, _QUEUE_ATTR, None)
    if isinstance(current, InlineDecoding):
        return current
    frames = getattr(getattr(receiver, "track", None), "_queue", None)
    if type(current) is not queue.Queue or not isinstance(frames, asyncio.Queue):
        raise RuntimeError(f"aiortc {version}: {type(receiver).__name__} has no stock {_QUEUE_ATTR} or track "
                           "queue; the in-line decoding hook needs updating")
    if getattr(receiver, _THREAD_ATTR, None) is not None:
        raise RuntimeError("the receiver's decoder already runs; install in-line decoding before it starts")
    inline = InlineDecoding(frames)
    setattr(receiver, _QUEUE_ATTR, inline)
    return inline


def hook_inline_decoding(pc: RTCPeerConnection) -> None:
    """In-line decoding on every audio track this peer connection receives."""
    on_audio_receiver(pc, install_inline_decoding)
