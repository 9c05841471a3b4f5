"""Opus in mono, straight through libopus (PyAV): what a call's voice needs and no more.

aiortc encodes and decodes Opus in stereo: every outgoing 20 ms frame is resampled to
two channels and encoded as stereo (~270 µs here), and the sender then walks the frame
in Python for its audio-level header (~160 µs); every incoming one is decoded to stereo
that we fold back to mono. A voice is one channel, as browsers send it: a mono encode
takes ~165 µs and needs neither the resampler nor the level walk (a track that hands
aiortc encoded packets skips both), and a mono decode skips the fold.
"""

from __future__ import annotations

import av
from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.jitterbuffer import JitterFrame

from base.pcm import RATE, TIME_BASE

# 96 kb/s as aiortc's own encoder: at this rate libopus stays in its CELT mode, the
# cheapest (SILK or hybrid at 32 kb/s cost twice the CPU here).
BIT_RATE = 96000
# libopus's effort, 0-10 (FFmpeg's default 10): 5 encodes a 20 ms speech frame in ~160 µs
# instead of ~225 here; at 96 kb/s the bits, not the search, carry the quality.
COMPLEXITY = 5
MIME_TYPE = "audio/opus"


class MonoOpusEncoder:
    """20 ms mono frames at 48 kHz (base.pcm.pcm_frame) → Opus packets aiortc sends as they are."""

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.bit_rate = BIT_RATE
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = RATE
        self._codec.time_base = TIME_BASE
        self._codec.options = {"application": "voip", "compression_level": str(COMPLEXITY)}

    def encode(self, frame: av.AudioFrame) -> av.Packet:
        """One packet for one 20 ms frame; the frame's pts (in samples) becomes its RTP timestamp."""
        packets = self._codec.encode(frame)
        if len(packets) != 1:  # libopus has no look-ahead queue: one frame in, one packet out
            raise RuntimeError(f"libopus returned {len(packets)} packets for one 20 ms frame")
        packet = packets[0]
        packet.pts = frame.pts  # libopus shifts its own by the pre-skip; RTP time is the track's
        packet.time_base = TIME_BASE
        return packet


class MonoOpusDecoder:
    """aiortc's decoder contract (JitterFrame → frames) with mono int16 frames out."""

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = RATE

    def decode(self, encoded_frame: JitterFrame) -> list[av.AudioFrame]:
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = TIME_BASE
        return list(self._codec.decode(packet))


def prefer_opus_only(transceiver: RTCRtpTransceiver) -> None:
    """Offer Opus alone on this audio transceiver, so a track may hand the sender Opus packets.

    Every WebRTC endpoint must support Opus (RFC 7874): a peer without it fails the
    negotiation, which says so, instead of receiving Opus under another codec's name."""
    opus = [codec for codec in RTCRtpSender.getCapabilities("audio").codecs if codec.mimeType.lower() == MIME_TYPE]
    if not opus:
        raise RuntimeError("this aiortc offers no Opus codec")
    transceiver.setCodecPreferences(opus)
