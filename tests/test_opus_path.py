"""base/opus.py and base/inline_decoding.py: mono Opus packets out of the capture track,
decoded in line on the receiving loop, over a real aiortc call on 127.0.0.1."""

from __future__ import annotations

import asyncio
import queue
import threading

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

from base.inline_decoding import InlineDecoding, hook_inline_decoding, install_inline_decoding
from base.jitter_buffer import hook_adaptive_jitter_buffer
from base.loopback_ice import acquire_loopback_only, release_loopback_only
from base.opus import MonoOpusDecoder, MonoOpusEncoder, prefer_opus_only
from base.pcm import FRAME_SAMPLES, RATE, level_dbfs, pcm_frame
from core.audio import CaptureTrack

TONE_HZ = 440.0


def _tone(start: int, amplitude: float = 8000.0) -> np.ndarray:
    t = (start + np.arange(FRAME_SAMPLES)) / RATE
    return (amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum))])


def test_mono_opus_round_trip_keeps_the_voice_and_the_track_time() -> None:
    encoder, decoder = MonoOpusEncoder(), MonoOpusDecoder()
    out: list[np.ndarray] = []
    for i in range(25):
        packet = encoder.encode(pcm_frame(_tone(i * FRAME_SAMPLES), i * FRAME_SAMPLES))
        assert packet.pts == i * FRAME_SAMPLES  # the RTP timestamp aiortc's pack() will use
        for frame in decoder.decode(JitterFrame(data=bytes(packet), timestamp=packet.pts)):
            assert frame.format.name == "s16" and len(frame.layout.channels) == 1 and frame.samples == FRAME_SAMPLES
            out.append(frame.to_ndarray().reshape(-1))
    heard = np.concatenate(out)[FRAME_SAMPLES * 5:]  # after the codec's start-up
    assert abs(_peak_hz(heard) - TONE_HZ) < 5
    assert abs(level_dbfs(heard) - level_dbfs(_tone(0))) < 1.5


def test_the_decoder_stand_in_decodes_in_line_and_drops_what_it_cannot_decode() -> None:
    frames: asyncio.Queue[av.AudioFrame] = asyncio.Queue()
    inline = InlineDecoding(frames)
    encoder = MonoOpusEncoder()
    opus = type("Codec", (), {"name": "opus", "mimeType": "audio/opus"})()
    packet = encoder.encode(pcm_frame(_tone(0), 0))
    inline.put((opus, JitterFrame(data=bytes(packet), timestamp=0)))
    assert frames.qsize() == 1 and inline.decoded == 1  # at once, on this thread
    inline.put((opus, JitterFrame(data=b"\xff\xff\xff", timestamp=960)))  # a code-3 packet with no frames
    assert inline.failed == 1 and frames.qsize() == 1
    # aiortc's idle worker waits in get() until the receiver stops it with put(None)
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(inline.get()))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive()
    inline.put(None)
    worker.join(2)
    assert not worker.is_alive() and got == [None]


def test_install_refuses_a_receiver_that_is_not_what_it_expects() -> None:
    class NotAReceiver:
        pass

    with pytest.raises(RuntimeError, match="aiortc"):
        install_inline_decoding(NotAReceiver())  # type: ignore[arg-type]

    class Started:
        _RTCRtpReceiver__decoder_queue: queue.Queue[object] = queue.Queue()
        _RTCRtpReceiver__decoder_thread = threading.current_thread()
        track = type("Track", (), {"_queue": asyncio.Queue()})()

    with pytest.raises(RuntimeError, match="before it starts"):
        install_inline_decoding(Started())  # type: ignore[arg-type]


@pytest.mark.timeout(60)
async def test_a_real_call_sends_mono_opus_packets_decoded_in_line_and_ends_cleanly() -> None:
    acquire_loopback_only()
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    callee = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sent = 0

    def read() -> np.ndarray:
        nonlocal sent
        sent += 1
        return _tone((sent - 1) * FRAME_SAMPLES)

    track = CaptureTrack(read, opus=True)
    received: asyncio.Queue[object] = asyncio.Queue()
    try:
        prefer_opus_only(caller.addTransceiver(track, direction="sendonly"))
        hook_adaptive_jitter_buffer(callee)
        hook_inline_decoding(callee)
        callee.on("track", lambda remote: received.put_nowait(remote))
        await caller.setLocalDescription(await caller.createOffer())
        audio_codecs = [line for line in caller.localDescription.sdp.splitlines() if line.startswith("a=rtpmap:")]
        assert audio_codecs and all("opus/48000" in line for line in audio_codecs)
        await callee.setRemoteDescription(RTCSessionDescription(sdp=caller.localDescription.sdp, type="offer"))
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(RTCSessionDescription(sdp=callee.localDescription.sdp, type="answer"))
        remote = await asyncio.wait_for(received.get(), 10)
        receiver = callee.getTransceivers()[0].receiver
        inline = receiver._RTCRtpReceiver__decoder_queue
        assert isinstance(inline, InlineDecoding)

        frames = [await asyncio.wait_for(remote.recv(), 10) for _ in range(40)]  # type: ignore[attr-defined]
        assert all(len(f.layout.channels) == 1 and f.sample_rate == RATE for f in frames)
        heard = np.concatenate([f.to_ndarray().reshape(-1) for f in frames[10:]])
        assert abs(_peak_hz(heard) - TONE_HZ) < 5 and level_dbfs(heard) > -20
        assert inline.decoded >= 40

        await callee.close()  # the receiver stops: aiortc's waiting thread ends the track
        with pytest.raises(MediaStreamError):
            while True:
                await asyncio.wait_for(remote.recv(), 5)  # type: ignore[attr-defined]
        assert receiver._RTCRtpReceiver__decoder_thread is None  # joined, not left waiting
    finally:
        await caller.close()
        await callee.close()
        release_loopback_only()
