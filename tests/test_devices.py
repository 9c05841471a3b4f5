"""A sound device vanishing mid-call (its PulseAudio module unloaded) gives the user a
message, and the call goes on or ends cleanly: no hang, no traceback.

PulseAudio moves a stream whose device vanished to another device if there is one;
PortAudio then keeps calling back and only the sound tells: a microphone moved to a
dead source delivers exact digital silence. With nowhere to move to, the stream dies
and PortAudio stops calling back.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import numpy as np
import pytest

from core.audio import DeviceAudio
from core.call.state import Phase
from core.call.engine import CallEngine
from core.call.events import Problem
from rig.engine_helpers import Recorder, custom_settings, engine_options
from rig.pulse_rig import PulseRig
from rig.server_process import TEST_SERVER_KEY, start_server

pytestmark = pytest.mark.timeout(90)

NOTICE_S = 6.0


def _pactl(env: dict[str, str], *args: str) -> str:
    return subprocess.run(["pactl", *args], check=True, capture_output=True, text=True, timeout=20,
                          env={**os.environ, **env}).stdout.strip()


def _device_problems(recorder: Recorder, device: str) -> list[Problem]:
    return [e for e in recorder.events if isinstance(e, Problem) and device in e.message.lower()]


async def _call_then_unplug(tmp_path, device: str, unplug) -> Problem:
    server = start_server(tmp_path, "--mode", "echo")
    engine = CallEngine(custom_settings(server.base_url), audio=DeviceAudio(None, None), api_key=TEST_SERVER_KEY,
                        options=engine_options())
    recorder = Recorder(engine)
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 15)
        await asyncio.sleep(2.5)  # longer than the device watch needs: nothing may be reported yet
        assert not _device_problems(recorder, device), recorder.events
        unplug()
        problem = await recorder.wait_for(lambda e: isinstance(e, Problem) and device in e.message.lower(), NOTICE_S)
        await asyncio.sleep(1.0)
        assert engine.state.phase in (Phase.CONNECTED, Phase.ENDED), engine.state
    finally:
        await asyncio.wait_for(engine.close(), 10)  # closing a dead stream must not hang
        server.stop()
    return problem


async def test_microphone_unplugged_mid_call(pulse, tmp_path, private_home, monkeypatch, capfd, caplog) -> None:
    name = f"gone{uuid.uuid4().hex[:6]}"
    sink = _pactl(pulse.env, "load-module", "module-null-sink", f"sink_name={name}", "rate=48000", "channels=1")
    source = _pactl(pulse.env, "load-module", "module-remap-source", f"master={name}.monitor", f"source_name={name}_mic")
    monkeypatch.setenv("PULSE_SOURCE", f"{name}_mic")
    # the test's microphone hisses like a real one (-60 dBFS), so only its loss is silence
    hiss = (np.random.default_rng(1).standard_normal(48000 * 30) * 32).astype(np.int16)
    player = subprocess.Popen(["pacat", "--playback", f"--device={name}", "--rate=48000", "--channels=1",
                               "--format=s16le", "--latency-msec=20"], stdin=subprocess.PIPE,
                              env={**os.environ, **pulse.env})
    player.stdin.write(hiss.tobytes()[: 48000 * 2])  # prime a second; the rest streams in the background
    feeder = asyncio.get_running_loop().run_in_executor(None, player.stdin.write, hiss.tobytes()[48000 * 2:])
    try:
        problem = await _call_then_unplug(tmp_path, "microphone", lambda: _pactl(pulse.env, "unload-module", source))
    finally:
        player.kill()
        await asyncio.gather(feeder, return_exceptions=True)
        player.wait(5)
        _pactl(pulse.env, "unload-module", sink)
    assert len(problem.message) < 300
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.exc_info], caplog.text[-2000:]


async def test_speaker_unplugged_mid_call(tmp_path, private_home, monkeypatch, capfd, caplog) -> None:
    rig = PulseRig(tmp_path / "pulse", speaker_only=True)  # one sink: nowhere to move the stream to
    rig.start()
    import sounddevice as sd

    sd._terminate()
    sd._initialize()
    try:
        problem = await _call_then_unplug(
            tmp_path, "speaker", lambda: rig.unload_module(rig.module_index("sink_name=spk")))
    finally:
        rig.stop()
        sd._terminate()
        sd._initialize()
    assert len(problem.message) < 300
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.exc_info], caplog.text[-2000:]
