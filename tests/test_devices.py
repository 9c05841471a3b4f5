"""A sound device vanishing mid-call (its PulseAudio module unloaded) gives the user a
message, and the call goes on or ends cleanly: no hang, no traceback.

The devices that vanish are this test's own (an extra null sink and a remapped source,
chosen through PULSE_SINK / PULSE_SOURCE), so the shared rig's devices stay for the
other tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import pytest

from core.audio import DeviceAudio
from core.call_state import Phase
from core.engine import CallEngine
from core.events import Problem
from engine_helpers import Recorder, custom_settings, fast_options
from server_process import TEST_SERVER_KEY, start_server

pytestmark = pytest.mark.timeout(90)

NOTICE_S = 6.0  # the device watch: PortAudio stops calling back; 1.5 s of that means gone


def _pactl(pulse, *args: str) -> str:
    return subprocess.run(["pactl", *args], check=True, capture_output=True, text=True, timeout=20,
                          env={**os.environ, **pulse.env}).stdout.strip()


@pytest.mark.parametrize("device", ["microphone", "speaker"])
async def test_device_unplugged_mid_call(pulse, tmp_path, private_home, monkeypatch, capfd, caplog, device) -> None:
    name = f"gone{uuid.uuid4().hex[:6]}"
    sink = _pactl(pulse, "load-module", "module-null-sink", f"sink_name={name}", "rate=48000", "channels=1")
    source = _pactl(pulse, "load-module", "module-remap-source", f"master={name}.monitor", f"source_name={name}_mic")
    monkeypatch.setenv("PULSE_SINK", name)
    monkeypatch.setenv("PULSE_SOURCE", f"{name}_mic")
    server = start_server(tmp_path, "--mode", "echo")
    engine = CallEngine(custom_settings(server.base_url), audio=DeviceAudio(None, None), api_key=TEST_SERVER_KEY,
                        options=fast_options())
    recorder = Recorder(engine)
    unloaded: list[str] = []
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 15)
        await asyncio.sleep(1.0)  # both streams running
        # The remapped source goes with the sink it reads, so unplugging the speaker takes only the sink.
        for module in ([source] if device == "microphone" else [source, sink]):
            _pactl(pulse, "unload-module", module)
            unloaded.append(module)
        problem = await recorder.wait_for(lambda e: isinstance(e, Problem) and device in e.message.lower(), NOTICE_S)
        await asyncio.sleep(1.0)
        assert engine.state.phase in (Phase.CONNECTED, Phase.ENDED), engine.state
        if engine.state.phase is Phase.ENDED:
            assert engine.state.reason
    finally:
        await asyncio.wait_for(engine.close(), 10)  # closing a dead stream must not hang
        server.stop()
        for module in (source, sink):
            if module not in unloaded:
                _pactl(pulse, "unload-module", module)
    assert len(problem.message) < 300
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.exc_info], caplog.text[-2000:]
