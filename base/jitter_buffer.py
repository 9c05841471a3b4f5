"""Adaptive audio jitter buffer that replaces aiortc's fixed one.

aiortc's audio receiver holds 4 packets (80 ms) before releasing anything, and after
one lost packet it stays ~280 ms deep for good (aiortc issue #543). This buffer keeps
aiortc's contract (``add(packet) -> (pli_flag, frame | None)``, one call per packet,
no timer) but:

- releases in-order packets at once: timing is smoothed later, by the time-driven
  playout stage (core/playout.py), not here;
- holds packets only behind a hole, for reordering: at most ``target`` packets, where
  ``target`` (1..6) follows the p95 delay spread of recent packets and shrinks back
  after a calm second; a hole is skipped once ``target`` packets wait behind it or once
  it is older than reordering has been seen to take (``hole_deadline``: the longest of
  the last holes that were filled, or of skipped packets that came late; before any, the
  p95 spread less one packet time; at most ``max_wait_s``). aiortc only calls the buffer
  when a packet arrives, so the hook arms a timer for the deadline: a lost packet costs
  its own 20 ms, not also the wait for the next packet or two;
- releases everything that became ready in one frame (several Opus frames repacked
  into one code-3 Opus packet, RFC 6716 section 3.2.5), so a late or skipped packet
  never leaves a lasting backlog; a backlog that cannot be merged is trimmed beyond
  ``target + 1``;
- copes with duplicates, late packets, 16-bit sequence wrap, timestamp jumps and a
  stream restart (new SSRC or a sequence jump).

The policy is pure (inject ``clock``); ``install_adaptive_jitter_buffer`` is the thin,
guarded hook into aiortc's private receiver attribute.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import aiortc
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from base.audio_receivers import on_audio_receiver

log = logging.getLogger(__name__)

_CAPACITY = 64  # slots (1.28 s of 20 ms packets); a power of two for cheap masking
_MASK = _CAPACITY - 1
_RESTART_DISTANCE = 100  # a packet this far behind is a new stream, not a late one
_CLOCK_JUMP_S = 1.0  # a transit change this large is a stream restart, not jitter
_PACKET_S = 0.020
_MIN_TARGET = 1
_MAX_TARGET = 6
_WINDOW = 50  # packets of transit history (one second of 20 ms packets)
_REORDER_WINDOW = 32  # holes remembered for how long reordering takes
_RECOMPUTE_EVERY = 5  # sorting the window on every packet would triple add()'s cost
_MAX_MERGED_SAMPLES = 5760  # an Opus packet carries at most 120 ms at 48 kHz
# Added to the wait reordering was seen to need (or the spread allows): timing noise.
HOLE_MARGIN_S = 0.005
_RECEIVER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_CODECS_ATTR = "_RTCRtpReceiver__codecs"
_MAPPER_ATTR = "_RTCRtpReceiver__timestamp_mapper"
_DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_DECODER_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"


@dataclass(frozen=True)
class JitterStats:
    """A snapshot of the buffer for telemetry."""

    depth: int  # packets held now
    max_depth: int  # the most ever held between two add() calls
    target: int  # packets allowed to wait behind a hole
    spread_ms: float  # p95 delay spread of recent packets
    received: int
    frames_out: int
    packets_out: int
    merged: int  # packets released inside another packet's frame
    skipped: int  # sequence numbers given up as lost
    trimmed: int  # packets dropped to cut a backlog
    late: int  # packets that came after their slot was released or skipped
    duplicates: int
    restarts: int


def opus_frame_samples(toc: int) -> int:
    """Samples at 48 kHz in one frame of an Opus packet with this TOC byte."""
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        return (480, 960, 1920, 2880)[config & 3]
    if config < 16:  # hybrid: 10, 20 ms
        return (480, 960)[config & 1]
    return (120, 240, 480, 960)[config & 3]  # CELT: 2.5, 5, 10, 20 ms


def merge_opus_packets(payloads: list[bytes]) -> Optional[bytes]:
    """Repack single-frame Opus packets into one code-3 packet, or None if they differ.

    Only code-0 packets (one frame each) with the same TOC byte can share a packet,
    and the result may carry at most 120 ms.
    """
    toc = payloads[0][0]
    if toc & 3 != 0 or len(payloads) * opus_frame_samples(toc) > _MAX_MERGED_SAMPLES:
        return None
    header = bytearray((toc | 3, 0x80 | len(payloads)))  # VBR, no padding, M frames
    for payload in payloads[:-1]:
        if payload[0] != toc:
            return None
        size = len(payload) - 1
        if size < 252:
            header.append(size)
        else:
            first = 252 + (size & 3)
            header += bytes((first, (size - first) >> 2))
    if payloads[-1][0] != toc:
        return None
    return bytes(header) + b"".join(p[1:] for p in payloads)


class AdaptiveJitterBuffer(JitterBuffer):
    """Shallow, self-adjusting audio jitter buffer (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        clock_rate: int = 48000,
        max_wait_s: float = 0.060,
        calm_s: float = 1.0,
        can_merge: Callable[[int], bool] = lambda payload_type: False,
    ) -> None:
        super().__init__(capacity=_CAPACITY, prefetch=0, is_video=False)
        self._clock = clock
        self._clock_rate = clock_rate
        self._max_wait_s = max_wait_s
        self._calm_s = calm_s
        self._can_merge = can_merge
        self._slots: list[Optional[RtpPacket]] = [None] * _CAPACITY
        self._head: Optional[int] = None  # next sequence number to release
        self._count = 0
        self._ssrc: Optional[int] = None
        self._hole_since: Optional[float] = None
        # how long holes that were only reordering took to fill, and the last skip's
        # (first sequence number, how many, hole start) to notice a skipped packet coming late
        self._reorder_s: collections.deque[float] = collections.deque(maxlen=_REORDER_WINDOW)
        self._last_skip: Optional[tuple[int, int, float]] = None
        # jitter estimate
        self._transits: collections.deque[float] = collections.deque(maxlen=_WINDOW)
        self._last_ts: Optional[int] = None
        self._ts_ext = 0
        self._since_recompute = 0
        self._target = _MIN_TARGET
        self._high_since = 0.0  # last time the measured target was >= the current one
        self._spread_s = 0.0
        # counters
        self._received = self._frames_out = self._packets_out = self._merged = 0
        self._skipped = self._trimmed = self._late = self._duplicates = 0
        self._restarts = self._max_depth = 0

    @property
    def target(self) -> int:
        return self._target

    @property
    def depth(self) -> int:
        return self._count

    def stats(self) -> JitterStats:
        return JitterStats(
            depth=self._count,
            max_depth=self._max_depth,
            target=self._target,
            spread_ms=self._spread_s * 1000.0,
            received=self._received,
            frames_out=self._frames_out,
            packets_out=self._packets_out,
            merged=self._merged,
            skipped=self._skipped,
            trimmed=self._trimmed,
            late=self._late,
            duplicates=self._duplicates,
            restarts=self._restarts,
        )

    def add(self, packet: RtpPacket) -> tuple[bool, Optional[JitterFrame]]:
        now = self._clock()
        self._received += 1
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self._restart()
            self._ssrc = packet.ssrc
        self._observe_timing(packet.timestamp, now)

        seq = packet.sequence_number
        if self._head is None:
            self._head = seq
        offset = (seq - self._head) & 0xFFFF
        if offset >= 0x8000:  # behind the head
            if 0x10000 - offset < _RESTART_DISTANCE:
                self._late += 1
                self._note_late(seq, now)
                return False, None
            self._restart()
            self._head = seq
        elif offset >= _CAPACITY:  # a jump past everything held: the stream moved on
            self._restart()
            self._head = seq

        slot = seq & _MASK
        if self._slots[slot] is not None:
            self._duplicates += 1
            return False, None
        if offset == 0 and self._hole_since is not None:  # the hole was only reordering
            self._reorder_s.append(now - self._hole_since)
        self._slots[slot] = packet
        self._count += 1
        frame = self._release(now)
        if self._count > self._max_depth:
            self._max_depth = self._count
        return False, frame

    def hole_deadline(self) -> Optional[float]:
        """When the hole at the head gets skipped if no packet comes first; None: no hole waits."""
        if self._hole_since is None:
            return None
        return self._hole_since + self._hole_wait()

    def release_due(self) -> Optional[JitterFrame]:
        """What a hole held back, once its deadline has passed (else None): the timer's call."""
        if self._hole_since is None or self._head is None:
            return None
        return self._release(self._clock())

    def _hole_wait(self) -> float:
        if self._reorder_s:
            return min(self._max_wait_s, max(self._reorder_s) + HOLE_MARGIN_S)
        # Nothing seen yet. The hole appeared when its successor arrived; a packet merely
        # reordered behind it arrives within the p95 transit spread, less one packet time.
        return min(self._max_wait_s, max(0.0, self._spread_s - _PACKET_S) + HOLE_MARGIN_S)

    def _note_late(self, seq: int, now: float) -> None:
        """A packet we gave up on came after all: the wait for it was too short."""
        if self._last_skip is not None:
            first, count, hole_since = self._last_skip
            if (seq - first) & 0xFFFF < count:
                self._reorder_s.append(now - hole_since)

    def _release(self, now: float) -> Optional[JitterFrame]:
        assert self._head is not None
        slots = self._slots
        if slots[self._head & _MASK] is None:
            if self._hole_since is None:
                self._hole_since = now
            if self._count <= self._target and now < self._hole_since + self._hole_wait():
                return None  # maybe reordered: wait for it
            first = self._head
            while slots[self._head & _MASK] is None:
                self._head = (self._head + 1) & 0xFFFF
                self._skipped += 1
            self._last_skip = (first, (self._head - first) & 0xFFFF, self._hole_since)
        self._hole_since = None

        run = [self._take()]
        if self._can_merge(run[0].payload_type):
            while slots[self._head & _MASK] is not None:
                run.append(self._take())
        data = _payload(run[0])
        if len(run) > 1:
            merged = merge_opus_packets([_payload(p) for p in run])
            if merged is None:  # unmergeable: release the first, keep the rest
                for packet in reversed(run[1:]):
                    self._head = (self._head - 1) & 0xFFFF
                    slots[self._head & _MASK] = packet
                    self._count += 1
                run = run[:1]
            else:
                data = merged
                self._merged += len(run) - 1
        self._frames_out += 1
        self._packets_out += len(run)
        self._trim()
        return JitterFrame(data=data, timestamp=run[0].timestamp)

    def _take(self) -> RtpPacket:
        assert self._head is not None
        slot = self._head & _MASK
        packet = self._slots[slot]
        assert packet is not None
        self._slots[slot] = None
        self._count -= 1
        self._head = (self._head + 1) & 0xFFFF
        return packet

    def _trim(self) -> None:
        """Drop the oldest packets (and holes) of a backlog deeper than target + 1."""
        assert self._head is not None
        while self._count > self._target + 1:
            slot = self._head & _MASK
            if self._slots[slot] is not None:
                self._slots[slot] = None
                self._count -= 1
                self._trimmed += 1
            else:
                self._skipped += 1
            self._head = (self._head + 1) & 0xFFFF

    def _restart(self) -> None:
        """Forget the old stream: drop what it left behind and its timing history."""
        self._restarts += 1
        self._trimmed += self._count
        self._slots = [None] * _CAPACITY
        self._count = 0
        self._head = None
        self._hole_since = None
        self._transits.clear()
        self._reorder_s.clear()
        self._last_skip = None
        self._last_ts = None

    def _observe_timing(self, timestamp: int, now: float) -> None:
        if self._last_ts is not None:
            step = (timestamp - self._last_ts) & 0xFFFFFFFF
            self._ts_ext += step - 0x100000000 if step >= 0x80000000 else step
        self._last_ts = timestamp
        transit = now - self._ts_ext / self._clock_rate
        transits = self._transits
        if transits and abs(transit - transits[-1]) > _CLOCK_JUMP_S:
            transits.clear()  # the sender's clock jumped: old transits mean nothing
        transits.append(transit)
        self._since_recompute += 1
        if self._since_recompute >= _RECOMPUTE_EVERY:
            self._since_recompute = 0
            self._update_target(now)

    def _update_target(self, now: float) -> None:
        ordered = sorted(self._transits)
        p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]
        self._spread_s = p95 - ordered[0]
        # Holding D packets behind a hole covers a spread of (D + 1) packet times.
        wanted = math.ceil(self._spread_s / _PACKET_S - 1e-9) - 1
        wanted = min(_MAX_TARGET, max(_MIN_TARGET, wanted))
        if wanted >= self._target:
            self._target = wanted
            self._high_since = now
        elif now - self._high_since >= self._calm_s:
            self._target = wanted
            self._high_since = now


class TimedJitterBuffer(AdaptiveJitterBuffer):
    """The kind the hook installs: a loop timer skips a waiting hole at its deadline, and
    what that releases reaches the receiver the way aiortc hands on the frames add()
    returns (timestamp mapped, into the decoder queue), unless the receiver has stopped."""

    def __init__(self, receiver: RTCRtpReceiver, codecs: dict[int, object], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._receiver = receiver
        self._codecs = codecs  # the receiver's own dict: it fills it when it starts
        self._payload_type: Optional[int] = None
        self._timer: Optional[asyncio.TimerHandle] = None

    def add(self, packet: RtpPacket) -> tuple[bool, Optional[JitterFrame]]:
        self._payload_type = packet.payload_type
        result = super().add(packet)
        if self._timer is not None or self._hole_since is not None:
            self._arm()
        return result

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.hole_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, deadline - self._clock()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        frame = self.release_due()
        if frame is None:
            self._arm()
            return
        codec = self._codecs.get(self._payload_type) if self._payload_type is not None else None
        if codec is None or getattr(self._receiver, _DECODER_THREAD_ATTR, None) is None:
            return  # the receiver stopped (or never started): nobody would decode it
        frame.timestamp = getattr(self._receiver, _MAPPER_ATTR).map(frame.timestamp)
        getattr(self._receiver, _DECODER_QUEUE_ATTR).put((codec, frame))


def _payload(packet: RtpPacket) -> bytes:
    # aiortc's receiver stores the depayloaded bytes in _data; for Opus they equal payload.
    return getattr(packet, "_data", packet.payload)


_stock_contract_checked = False


def _check_stock_contract() -> None:
    """Fail loudly if aiortc's JitterBuffer no longer looks like what we replace."""
    global _stock_contract_checked
    if _stock_contract_checked:
        return
    version = getattr(aiortc, "__version__", "unknown")
    params = list(inspect.signature(JitterBuffer.add).parameters)
    probe = JitterBuffer(capacity=4, prefetch=0)
    packet = RtpPacket(payload_type=111, sequence_number=1, timestamp=0, payload=b"\x00")
    packet._data = packet.payload  # type: ignore[attr-defined]
    result = probe.add(packet)
    if params != ["self", "packet"] or not (
        isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool)
    ):
        raise RuntimeError(
            f"aiortc {version}: JitterBuffer.add() no longer takes one packet and returns "
            "(pli_flag, frame); the adaptive jitter buffer hook needs updating"
        )
    _stock_contract_checked = True


def install_adaptive_jitter_buffer(
    receiver: RTCRtpReceiver, *, clock: Callable[[], float] = time.monotonic
) -> AdaptiveJitterBuffer:
    """Replace an audio receiver's stock jitter buffer with an AdaptiveJitterBuffer.

    Call it before packets arrive (from the peer connection's "track" event). Raises
    RuntimeError naming the aiortc version if the private hook is not what it was.
    """
    version = getattr(aiortc, "__version__", "unknown")
    current = getattr(receiver, _RECEIVER_ATTR, None)
    if isinstance(current, AdaptiveJitterBuffer):
        return current
    if type(current) is not JitterBuffer:
        raise RuntimeError(
            f"aiortc {version}: {type(receiver).__name__} has no stock {_RECEIVER_ATTR} "
            f"(found {type(current).__name__}); the adaptive jitter buffer hook needs updating"
        )
    if getattr(current, "_is_video", True):
        raise RuntimeError(
            f"aiortc {version}: the receiver's jitter buffer is not an audio one; "
            "install the adaptive buffer on audio receivers only"
        )
    _check_stock_contract()
    if not (callable(getattr(getattr(receiver, _MAPPER_ATTR, None), "map", None))
            and hasattr(receiver, _DECODER_QUEUE_ATTR) and hasattr(receiver, _DECODER_THREAD_ATTR)):
        raise RuntimeError(
            f"aiortc {version}: {type(receiver).__name__} no longer has {_MAPPER_ATTR}, "
            f"{_DECODER_QUEUE_ATTR} and {_DECODER_THREAD_ATTR}; the adaptive jitter buffer's "
            "hole timer needs updating"
        )
    if current._origin is not None:
        log.warning("jitter buffer replaced after packets arrived; some may be lost")
    codecs = getattr(receiver, _CODECS_ATTR, {})

    def can_merge(payload_type: int) -> bool:
        codec = codecs.get(payload_type)
        return codec is not None and codec.mimeType.lower() == "audio/opus"

    buffer = TimedJitterBuffer(receiver, codecs, clock=clock, can_merge=can_merge)
    setattr(receiver, _RECEIVER_ATTR, buffer)
    log.debug("adaptive jitter buffer installed (aiortc %s)", version)
    return buffer


def hook_adaptive_jitter_buffer(
    pc: RTCPeerConnection,
    on_installed: Callable[[AdaptiveJitterBuffer], None] = lambda buffer: None,
) -> None:
    """Install the adaptive buffer on every audio track this peer connection receives."""
    on_audio_receiver(pc, lambda receiver: on_installed(install_adaptive_jitter_buffer(receiver)))
