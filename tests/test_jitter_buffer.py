"""AdaptiveJitterBuffer on synthetic packet sequences with a fake clock, and its hook."""

from __future__ import annotations

import asyncio
import queue
import random

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpCodecParameters, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtp import RtpPacket

from base.loopback_ice import acquire_loopback_only, release_loopback_only
from base.jitter_buffer import (
    HOLE_MARGIN_S,
    AdaptiveJitterBuffer,
    hook_adaptive_jitter_buffer,
    install_adaptive_jitter_buffer,
    merge_opus_packets,
)

TOC = 0x78  # CELT fullband 20 ms, mono, one frame (what aiortc's Opus encoder sends)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def packet(seq: int, *, ts: int | None = None, ssrc: int = 7) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq & 0xFFFF,
                  timestamp=(seq * 960 if ts is None else ts) & 0xFFFFFFFF, ssrc=ssrc,
                  payload=bytes((TOC, seq & 0xFF, (seq >> 8) & 0xFF)))
    p._data = p.payload  # what aiortc's receiver sets before add()
    return p


def frame_seqs(frame: JitterFrame | None) -> list[int]:
    """Low 16 bits of the sequence numbers carried in a frame (ours: bytes 1-2 of each)."""
    if frame is None:
        return []
    data = frame.data
    if data[0] & 3 == 0:
        return [data[1] | data[2] << 8]
    count = data[1] & 0x3F
    sizes = list(data[2 : 2 + count - 1])
    assert all(s == 2 for s in sizes)
    body = data[2 + count - 1 :]
    return [body[i] | body[i + 1] << 8 for i in range(0, len(body), 2)]


class Feeder:
    """Feeds packets at given arrival times, collecting what comes out in order."""

    def __init__(self, **kwargs: object) -> None:
        self.clock = FakeClock()
        self.buffer = AdaptiveJitterBuffer(clock=self.clock, can_merge=lambda pt: True,
                                           **kwargs)  # type: ignore[arg-type]
        self.out: list[int] = []
        self.depths: list[int] = []

    def feed(self, seq: int, at: float | None = None, **kwargs: object) -> list[int]:
        if at is not None:
            self.clock.now = at
        pli, frame = self.buffer.add(packet(seq, **kwargs))  # type: ignore[arg-type]
        assert pli is False
        got = frame_seqs(frame)
        self.out += got
        self.depths.append(self.buffer.depth)
        return got

    def stream(self, seqs: list[int], start: float = 100.0, step: float = 0.02) -> None:
        for i, seq in enumerate(seqs):
            self.feed(seq, start + i * step)


def test_in_order_packets_come_out_at_once_and_nothing_is_held() -> None:
    f = Feeder()
    for i in range(50):
        assert f.feed(i, 100 + i * 0.02) == [i]
    assert set(f.depths) == {0}
    assert f.buffer.stats().frames_out == 50


def test_a_swapped_pair_is_put_back_in_order_in_one_frame() -> None:
    f = Feeder()
    f.stream([0, 1, 3, 2, 4, 5])
    assert f.out == [0, 1, 2, 3, 4, 5]
    assert f.buffer.stats().merged == 1
    assert f.buffer.stats().skipped == 0
    assert f.depths[-1] == 0


def test_duplicates_are_dropped_and_counted() -> None:
    f = Feeder()
    f.stream([0, 1, 1, 2, 2, 3])
    assert f.out == [0, 1, 2, 3]
    s = f.buffer.stats()
    assert s.late + s.duplicates == 2


def test_duplicate_while_held_behind_a_hole() -> None:
    f = Feeder()
    f.stream([0, 2, 2, 1])
    assert f.out == [0, 1, 2]
    assert f.buffer.stats().duplicates == 1


def test_a_lost_packet_is_skipped_once_target_packets_wait_and_leaves_no_depth() -> None:
    f = Feeder()
    f.stream([0, 1, 3, 4] + list(range(5, 200)))
    assert f.out == [0, 1] + list(range(3, 200))
    s = f.buffer.stats()
    assert s.skipped == 1
    assert max(f.depths[10:]) == 0  # no lasting delay (aiortc issue #543)


def test_a_hole_is_skipped_after_the_bounded_wait_even_under_a_deep_target() -> None:
    f = Feeder(max_wait_s=0.060)
    f.buffer._target = 6  # as if jitter had been high
    f.buffer._spread_s = 0.150
    f.feed(0, 100.0)
    assert f.feed(2, 100.04) == []  # waiting for 1
    assert f.feed(3, 100.05) == []
    assert f.feed(4, 100.101) == [2, 3, 4]  # 60 ms after the hole appeared
    assert f.buffer.stats().skipped == 1


@pytest.mark.parametrize(("spread_s", "wait_s"), [
    (0.0, HOLE_MARGIN_S),  # a clean link: a hole is a loss, skipped almost at once
    (0.0285, 0.0085 + HOLE_MARGIN_S),  # 0-30 ms of jitter: a reordered packet is at most ~8.5 ms late
    (0.150, 0.060),  # never longer than max_wait_s
])
def test_a_hole_waits_only_as_long_as_the_measured_spread_allows(spread_s: float, wait_s: float) -> None:
    f = Feeder(max_wait_s=0.060)
    f.buffer._target = 6  # the count rule alone would hold on
    f.buffer._spread_s = spread_s
    assert f.buffer.hole_deadline() is None and f.buffer.release_due() is None
    f.feed(0, 100.0)
    assert f.feed(2, 100.04) == []
    deadline = f.buffer.hole_deadline()
    assert deadline == pytest.approx(100.04 + wait_s)
    f.clock.now = deadline - 0.001
    assert f.buffer.release_due() is None  # not yet: 1 may still come
    f.clock.now = deadline
    assert frame_seqs(f.buffer.release_due()) == [2]
    assert f.buffer.hole_deadline() is None and f.buffer.stats().skipped == 1
    assert f.feed(1, deadline + 0.001) == [] and f.buffer.stats().late == 1
    assert f.feed(3, 100.06) == [3]


def test_a_reordered_packet_within_the_deadline_is_put_back_in_order() -> None:
    f = Feeder()
    f.buffer._spread_s = 0.0285
    f.feed(0, 100.0)
    assert f.feed(2, 100.04) == []
    assert f.feed(1, 100.04 + 0.008) == [1, 2]  # 8 ms after its successor: before the deadline
    assert f.buffer.hole_deadline() is None and f.buffer.stats().skipped == 0


def test_the_hole_wait_learns_how_long_reordering_takes() -> None:
    # A jittery sender (here: the echo server passing the way there's jitter on) makes the
    # transit spread large while packets are only ever ~10 ms out of order.
    f = Feeder(max_wait_s=0.060)
    f.buffer._target = 6
    f.buffer._spread_s = 0.150  # the spread alone would wait the whole 60 ms
    f.feed(0, 100.0)
    f.feed(2, 100.04)
    assert f.buffer.hole_deadline() == pytest.approx(100.04 + 0.060)
    assert f.feed(1, 100.048) == [1, 2]  # filled 8 ms after it appeared: only reordering
    f.feed(4, 100.08)
    assert f.buffer.hole_deadline() == pytest.approx(100.08 + 0.008 + HOLE_MARGIN_S)


def test_a_skipped_packet_that_comes_late_lengthens_the_wait() -> None:
    f = Feeder(max_wait_s=0.060)
    f.buffer._target = 6
    f.feed(0, 100.0)
    f.feed(2, 100.04)  # a clean link so far: the hole waits only the margin
    f.clock.now = 100.04 + HOLE_MARGIN_S
    assert frame_seqs(f.buffer.release_due()) == [2]
    assert f.feed(1, 100.052) == []  # 12 ms after its hole appeared: too late, but noted
    assert f.buffer.stats().late == 1
    f.feed(3, 100.06)
    f.feed(5, 100.10)
    assert f.buffer.hole_deadline() == pytest.approx(100.10 + 0.012 + HOLE_MARGIN_S)


def test_a_late_packet_after_its_skip_is_dropped_as_late() -> None:
    f = Feeder()
    f.stream([0, 2, 3, 1, 4])
    assert f.out == [0, 2, 3, 4]
    assert f.buffer.stats().late == 1


def test_burst_loss_is_skipped_in_one_step() -> None:
    f = Feeder()
    seqs = list(range(10)) + list(range(20, 60))
    f.stream(seqs)
    assert f.out == seqs
    assert f.buffer.stats().skipped == 10
    assert f.depths[-1] == 0


def test_sequence_numbers_wrap_at_16_bits() -> None:
    f = Feeder()
    seqs = [65533, 65534, 0, 65535, 1, 2, 4, 5, 6]
    f.stream(seqs)
    assert f.out == [65533, 65534, 65535, 0, 1, 2, 4, 5, 6]
    assert f.buffer.stats().restarts == 0


def test_a_new_ssrc_restarts_the_stream() -> None:
    f = Feeder()
    f.stream([100, 101, 102])
    f.feed(5000, 101.0, ssrc=99)
    f.feed(5001, 101.02, ssrc=99)
    assert f.out == [100, 101, 102, 5000, 5001]
    assert f.buffer.stats().restarts == 1


def test_a_sequence_jump_backwards_is_a_restart_not_a_late_packet() -> None:
    f = Feeder()
    f.stream(list(range(1000, 1010)))
    f.feed(10, 101.0)
    f.feed(11, 101.02)
    assert f.out[-2:] == [10, 11]
    assert f.buffer.stats().restarts == 1


def test_a_timestamp_jump_resets_the_jitter_estimate_without_growing_the_target() -> None:
    f = Feeder()
    for i in range(100):
        f.feed(i, 100 + i * 0.02)
    for i in range(100, 200):  # the sender's clock jumps by an hour
        f.feed(i, 100 + i * 0.02, ts=i * 960 + 48000 * 3600)
    assert f.out == list(range(200))
    assert f.buffer.target == 1


def test_target_grows_with_jitter_and_shrinks_after_a_calm_second() -> None:
    f = Feeder(calm_s=1.0)
    rng = random.Random(3)
    t = 100.0
    arrivals = sorted((t + i * 0.02 + rng.uniform(0, 0.09), i) for i in range(150))
    for at, seq in arrivals:
        f.feed(seq, at)
    grown = f.buffer.target
    assert grown >= 3
    assert f.buffer.stats().spread_ms > 60
    targets = []
    for i in range(150, 300):  # calm again
        f.feed(i, t + i * 0.02 + 0.1)
        targets.append(f.buffer.target)
    assert targets[0] == grown  # not at once
    assert targets[-1] == 1
    # the shrink happened between one and three seconds of calm (50-150 packets)
    assert 40 <= targets.index(1) <= 150


def test_jittered_lossy_stream_stays_shallow_and_loses_only_what_was_lost() -> None:
    rng = random.Random(11)
    f = Feeder()
    sent = [i for i in range(3000) if rng.random() >= 0.01]
    arrivals = sorted((100 + i * 0.02 + rng.uniform(0, 0.03), i) for i in sent)
    for at, seq in arrivals:
        f.feed(seq, at)
    lost = 3000 - len(sent)
    s = f.buffer.stats()
    assert f.out == sorted(f.out)  # never out of order
    assert len(f.out) >= len(sent) - 5  # reordering almost never costs a packet
    assert s.skipped >= lost
    assert max(f.depths) <= s.target + 1
    assert sum(f.depths) / len(f.depths) < 0.5


def test_unmergeable_backlog_is_trimmed_beyond_target_plus_one() -> None:
    clock = FakeClock()
    buffer = AdaptiveJitterBuffer(clock=clock)  # can_merge: never (not Opus)
    out: list[int] = []
    depths = []
    for i, seq in enumerate([0, 2, 3, 1, 4, 5, 6, 7, 8]):
        clock.now = 100 + i * 0.02
        out += frame_seqs(buffer.add(packet(seq))[1])
        depths.append(buffer.depth)
    assert max(depths) <= buffer.target + 1
    assert out == sorted(out)
    assert buffer.stats().trimmed + buffer.stats().skipped >= 1


def test_merged_opus_frames_decode_to_their_total_duration() -> None:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = "mono"
    encoder.format = "s16"
    payloads = []
    for i in range(6):
        frame = av.AudioFrame.from_ndarray(
            (3000 * np.sin(np.arange(960) * 0.05 + i)).astype(np.int16).reshape(1, -1),
            format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = i * 960
        payloads += [bytes(p) for p in encoder.encode(frame)]
    payloads = payloads[:3]
    assert len(payloads) == 3 and all(p[0] & 3 == 0 for p in payloads)
    merged = merge_opus_packets(payloads)
    assert merged is not None
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = 48000
    decoder.layout = "stereo"
    decoder.format = "s16"
    frames = decoder.decode(av.Packet(merged))
    assert sum(f.samples for f in frames) == 3 * 960


def test_merge_refuses_mixed_configurations_and_over_120_ms() -> None:
    a = bytes((TOC, 1, 2))
    assert merge_opus_packets([a, bytes((TOC ^ 0x08, 1, 2))]) is None
    assert merge_opus_packets([a] * 7) is None
    assert merge_opus_packets([bytes((TOC | 1, 1)), a]) is None  # already multi-frame
    big = bytes((TOC,)) + bytes(300)
    merged = merge_opus_packets([big, a])
    assert merged is not None and merged[2:4] == bytes((252, 12))  # 300 = 252 + 4 * 12


def test_install_refuses_what_is_not_a_stock_audio_buffer() -> None:
    class NotAReceiver:
        pass

    with pytest.raises(RuntimeError, match="aiortc"):
        install_adaptive_jitter_buffer(NotAReceiver())  # type: ignore[arg-type]

    class VideoReceiver:
        _RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=512, is_video=True)

    with pytest.raises(RuntimeError, match="audio"):
        install_adaptive_jitter_buffer(VideoReceiver())  # type: ignore[arg-type]

    class Moved:
        _RTCRtpReceiver__jitter_buffer = object()

    with pytest.raises(RuntimeError, match="aiortc 1"):
        install_adaptive_jitter_buffer(Moved())  # type: ignore[arg-type]


class StoppableReceiver:
    """The private pieces of aiortc's RTCRtpReceiver the hook uses, under their real names
    (the real receiver's are checked by the hook test below)."""

    def __init__(self) -> None:
        self._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=16, prefetch=4)
        self._RTCRtpReceiver__codecs = {111: RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000,
                                                                   channels=2, payloadType=111)}
        self._RTCRtpReceiver__timestamp_mapper = TimestampMapper()
        self._RTCRtpReceiver__decoder_queue: queue.Queue[object] = queue.Queue()
        self._RTCRtpReceiver__decoder_thread: object | None = object()  # started


async def test_the_hook_skips_a_hole_at_its_deadline_with_no_packet_to_trigger_it() -> None:
    receiver = StoppableReceiver()
    buffer = install_adaptive_jitter_buffer(receiver)  # type: ignore[arg-type]
    decoded: queue.Queue[object] = receiver._RTCRtpReceiver__decoder_queue
    for seq in (0, 1):  # what aiortc's receiver does with a frame add() returns
        _, ready = buffer.add(packet(seq))
        assert ready is not None
        ready.timestamp = receiver._RTCRtpReceiver__timestamp_mapper.map(ready.timestamp)
    assert buffer.add(packet(3)) == (False, None)  # 2 is missing: 3 waits
    await asyncio.sleep(HOLE_MARGIN_S + 0.03)
    codec, frame = decoded.get_nowait()
    assert codec is receiver._RTCRtpReceiver__codecs[111]
    assert frame_seqs(frame) == [3] and frame.timestamp == 3 * 960  # mapped from the stream's start
    assert buffer.stats().skipped == 1 and buffer.hole_deadline() is None

    receiver._RTCRtpReceiver__decoder_thread = None  # the receiver stopped
    buffer.add(packet(5))
    await asyncio.sleep(HOLE_MARGIN_S + 0.03)
    assert decoded.empty()  # released, but nobody would decode it
    assert buffer.stats().skipped == 2


def test_install_refuses_a_receiver_without_what_the_hole_timer_uses() -> None:
    receiver = StoppableReceiver()
    del receiver._RTCRtpReceiver__timestamp_mapper
    with pytest.raises(RuntimeError, match="hole timer"):
        install_adaptive_jitter_buffer(receiver)  # type: ignore[arg-type]


def test_install_checks_the_stock_add_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    import base.jitter_buffer as jb

    monkeypatch.setattr(jb, "_stock_contract_checked", False)
    monkeypatch.setattr(JitterBuffer, "add", lambda self, packet: None)

    class Receiver:
        _RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=16, prefetch=4)

    with pytest.raises(RuntimeError, match="pli_flag"):
        install_adaptive_jitter_buffer(Receiver())  # type: ignore[arg-type]


@pytest.mark.timeout(30)
async def test_hook_replaces_the_real_receivers_buffer_inside_set_remote_description() -> None:
    acquire_loopback_only()
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    callee = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        caller.addTransceiver("audio", direction="sendonly")
        installed: list[AdaptiveJitterBuffer] = []
        hook_adaptive_jitter_buffer(callee, installed.append)
        await caller.setLocalDescription(await caller.createOffer())
        await callee.setRemoteDescription(RTCSessionDescription(
            sdp=caller.localDescription.sdp, type="offer"))
        assert len(installed) == 1
        receiver = callee.getTransceivers()[0].receiver
        assert receiver._RTCRtpReceiver__jitter_buffer is installed[0]
        # installing twice hands back the same buffer
        assert install_adaptive_jitter_buffer(receiver) is installed[0]
    finally:
        await caller.close()
        await callee.close()
        release_loopback_only()
