"""Calls to the real server process with a real aiortc client over loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from core.audio import level_dbfs
from realtime_client import RealtimeClient, ephemeral_key
from server_process import ServerProcess, start_server

pytestmark = pytest.mark.timeout(120)


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(48000 * seconds)) / 48000
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype(np.int16)


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tmp_path_factory.mktemp("echo"), "--mode", "echo")
    yield server
    assert server.stop() == 0, server.stderr()


async def test_echo_mode_returns_the_callers_audio(echo_server: ServerProcess) -> None:
    client = await RealtimeClient.connect(echo_server.base_url,
                                          await ephemeral_key(echo_server.base_url, echo_server.server_key))
    try:
        created = await client.wait_for("session.created")
        assert created["event_id"] and created["session"]["audio"]["input"]["turn_detection"] is None
        quiet_before = client.audio.since(0)
        assert len(quiet_before) == 0 or level_dbfs(quiet_before) < -80, "silence when idle"
        sent_at = time.monotonic()
        await client.speak(tone(1.0)).finished
        await asyncio.sleep(0.3)
        echoed = client.audio.since(sent_at)
        # Loud audio came back, about as much as was sent (Opus changes the samples, not the length).
        assert level_dbfs(echoed) > -30
        loud_frames = sum(1 for s in client.audio.samples if level_dbfs(s) > -30)
        assert 40 <= loud_frames <= 60, loud_frames
        # The echo carries the same pitch: the spectrum peaks at 440 Hz.
        spectrum = np.abs(np.fft.rfft(echoed.astype(np.float64)))
        peak_hz = np.argmax(spectrum) * 48000 / len(echoed)
        assert abs(peak_hz - 440) < 10, peak_hz
        first = client.audio.first_loud_after(sent_at)
        assert first is not None and first - sent_at < 1.0  # a sanity bound; bench/ measures latency
    finally:
        await client.close()


async def test_the_server_ends_a_call_the_client_hangs_up(echo_server: ServerProcess) -> None:
    client = await RealtimeClient.connect(echo_server.base_url,
                                          await ephemeral_key(echo_server.base_url, echo_server.server_key))
    assert client.location and client.location.startswith("/v1/realtime/calls/rtc_")
    call_id = client.location.rsplit("/", 1)[1]
    await client.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and f"call {call_id} ended" not in echo_server.stderr():
        await asyncio.sleep(0.1)
    line = next(li for li in echo_server.stderr().splitlines() if f"call {call_id} ended" in li)
    assert "reason: connection closed" in line
    assert echo_server.server_key not in echo_server.stderr()
