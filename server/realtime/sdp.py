"""Checks on an SDP offer before it reaches aiortc: a clear 400 instead of a stack trace.

A usable offer is an SDP offer with at least one audio m-line and an
application m-line for the data channel (SCTP over DTLS), with ICE credentials.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.realtime.validation import ApiError


@dataclass(frozen=True)
class OfferSummary:
    audio_lines: int
    candidates: int  # 0 for a trickle offer (Chromium sends them later or never)


def _bad(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_offer")


def check_offer(body: bytes) -> tuple[str, OfferSummary]:
    """The offer as text plus what it holds; ApiError 400 when it cannot make a call."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("The SDP offer is not UTF-8 text.") from exc
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise _bad("The body is not an SDP offer (it must start with 'v=0').")
    media = [line for line in lines if line.startswith("m=")]
    audio = [line for line in media if line.startswith("m=audio ")]
    data = [line for line in media if line.startswith("m=application ") and "SCTP" in line.upper()]
    if not audio:
        raise _bad("The SDP offer has no audio m-line; add an audio track before creating the offer.")
    if not data:
        raise _bad("The SDP offer has no data channel; create the 'oai-events' data channel before the offer.")
    if not any(line.startswith("a=ice-ufrag:") for line in lines) or \
            not any(line.startswith("a=ice-pwd:") for line in lines):
        raise _bad("The SDP offer has no ICE credentials (a=ice-ufrag / a=ice-pwd).")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise _bad("The SDP offer has no DTLS fingerprint.")
    if not any(line.startswith("a=rtpmap:") and "opus/48000" in line.lower() for line in lines):
        raise _bad("The SDP offer does not offer the Opus codec at 48 kHz.")
    candidates = sum(1 for line in lines if line.startswith("a=candidate:"))
    return text, OfferSummary(len(audio), candidates)
