"""Set up each audio receiver of a peer connection before its first packet.

aiortc emits "track" inside setRemoteDescription, before ICE/DTLS connect and before
the receiver starts its decoder, so what is installed then sees every packet.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamTrack


def on_audio_receiver(pc: RTCPeerConnection, setup: Callable[[RTCRtpReceiver], None]) -> None:
    """Call `setup` with the receiver of every audio track `pc` receives."""

    def on_track(track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:
                setup(transceiver.receiver)
                return
        raise RuntimeError("no receiver found for the remote audio track")

    pc.on("track", on_track)
