"""The engine against the real local server process, over real WebRTC on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from core.audio import FileAudio, read_wav
from core.call.state import Phase
from core.call.engine import CallEngine
from core.call.events import LatencyMeasured
from rig.engine_helpers import Recorder, custom_settings, engine_options, is_audible
from rig.pulse_rig import tone, write_wav
from rig.server_process import TEST_SERVER_KEY, start_server

pytestmark = pytest.mark.timeout(120)


def _engine(server, tmp_path, seconds: float = 1.0, **options) -> tuple[CallEngine, FileAudio]:
    audio = FileAudio(write_wav(tmp_path / "tone.wav", tone(440, seconds)), tmp_path / "out.wav")
    engine = CallEngine(custom_settings(server.base_url), audio=audio, api_key=TEST_SERVER_KEY,
                        options=engine_options(**options))
    return engine, audio


async def test_echo_call_sends_and_receives_audio_and_measures(tmp_path, private_home):
    server = start_server(tmp_path, "--mode", "echo")
    try:
        engine, audio = _engine(server, tmp_path)
        recorder = Recorder(engine)
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 15)
        engine.press()
        await audio.source.finished.wait()
        engine.release()
        await asyncio.sleep(0.8)
        await engine.close()
    finally:
        server.stop()
    heard = read_wav(tmp_path / "out.wav")
    assert is_audible(heard), "the echoed tone never came back"
    names = {e.name for e in recorder.events if isinstance(e, LatencyMeasured)}
    assert {"token_acquisition", "sdp_exchange", "connect"} <= names
    assert engine.state.phase is Phase.ENDED and engine.state.reason == "You hung up."


async def test_killed_server_restarted_on_same_port_reconnects(tmp_path, private_home):
    server = start_server(tmp_path, "--mode", "echo")
    port = server.port
    engine, _ = _engine(server, tmp_path)
    recorder = Recorder(engine)
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 15)
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(5)
        lost_at = time.monotonic()
        await recorder.wait_phase(Phase.RECONNECTING, 10)
        detected = time.monotonic() - lost_at
        server = start_server(tmp_path, "--mode", "echo", "--port", str(port))
        restarted_at = time.monotonic()
        await recorder.wait_connected_again(40)
        back_after = time.monotonic() - restarted_at
    finally:
        await engine.close()
        server.stop()
    assert detected < 5, f"the lost connection took {detected:.1f} s to notice"
    assert back_after < 20, f"connected again {back_after:.1f} s after the restart"
    assert engine.reconnects >= 1


async def test_frozen_server_is_noticed_within_five_seconds(tmp_path, private_home):
    server = start_server(tmp_path, "--mode", "echo")
    engine, _ = _engine(server, tmp_path)
    recorder = Recorder(engine)
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 15)
        os.kill(server.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        await recorder.wait_phase(Phase.RECONNECTING, 10)
        detected = time.monotonic() - frozen_at
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await engine.close()
        server.stop()
    assert detected < 5, f"a frozen server took {detected:.1f} s to notice (aiortc alone: ~30 s)"


@pytest.mark.timeout(90)
async def test_server_gone_for_good_real_timeline(tmp_path, private_home):
    """Five attempts at 1, 2, 4, 8, 16 s on the real clock, then a clear end."""
    server = start_server(tmp_path, "--mode", "echo")
    engine, _ = _engine(server, tmp_path)
    recorder = Recorder(engine)
    stamps: list[tuple[float, object]] = []
    engine.subscribe(lambda e: stamps.append((time.monotonic(), e)))
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 15)
        server.stop()
        ended = await recorder.wait_phase(Phase.ENDED, 70)
    finally:
        await engine.close()
    reconnecting = [(t, e.state) for t, e in stamps if getattr(e, "state", None) and e.state.phase is Phase.RECONNECTING]
    connecting = [t for t, e in stamps if getattr(e, "state", None) and e.state.phase is Phase.CONNECTING]
    assert [s.delay for _, s in reconnecting] == [1.0, 2.0, 4.0, 8.0, 16.0]
    # each new attempt starts its delay after the reconnecting notice
    waits = [next(c for c in connecting if c > t) - t for t, _ in reconnecting]
    for waited, (_, state) in zip(waits, reconnecting):
        assert state.delay - 0.05 <= waited <= state.delay + 1.0, (waits, state)
    assert "attempts to reconnect failed" in ended.state.reason
