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
from core.call_state import Phase
from core.engine import CallEngine
from core.events import Problem
from rig.engine_helpers import Recorder, custom_settings, fast_options
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
                        options=fast_options())
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


# --- the pure policies: reopen with backoff, tell late, say it recovered -------------------------

from core.audio import StreamHealth, _CaptureRing  # noqa: E402
from core.sound_devices import Device, Recovery, SilenceWatch  # noqa: E402
from base.pcm import FRAME_SAMPLES, RATE  # noqa: E402


def _run_recovery(timeline: list[tuple[float, StreamHealth]]) -> list[tuple[float, str]]:
    recovery = Recovery(Device.MICROPHONE)
    happened = []
    for now, health in timeline:
        decision = recovery.update(now, health)
        if decision.reopen:
            happened.append((now, "reopen"))
        if decision.tell:
            happened.append((now, "tell"))
        if decision.recovered:
            happened.append((now, "recovered"))
    return happened


def test_slow_first_callback_is_not_a_failure() -> None:
    # opened at 0, first callback only at 1.4 s, then regular
    timeline = [(t / 4, StreamHealth(0.0, None if t / 4 < 1.4 else t / 4, ended=False)) for t in range(0, 20)]
    assert _run_recovery(timeline) == []


def test_one_stall_reopens_without_telling_the_user() -> None:
    # callbacks until 2.0, none until 4.5 (a suspend), then again
    timeline = []
    for step in range(0, 40):
        now = step / 4
        last = now if now <= 2.0 or now >= 4.5 else 2.0
        timeline.append((now, StreamHealth(0.0, last, ended=False)))
    happened = _run_recovery(timeline)
    assert happened and all(what == "reopen" for _, what in happened), happened
    assert happened[0] == (3.75, "reopen")  # 1.5 s after the last callback, not before


def test_a_device_that_stays_away_is_told_once_retried_with_backoff_and_recovered() -> None:
    timeline = [(0.0, StreamHealth(0.0, 0.0, ended=False))]
    for step in range(1, 80):  # gone at 0 (ended), back at 15 s
        now = step / 4
        timeline.append((now, StreamHealth(now, now if now >= 15 else None, ended=now < 15)))
    happened = _run_recovery(timeline)
    reopens = [t for t, what in happened if what == "reopen"]
    assert reopens[:5] == [0.25, 0.75, 1.75, 3.75, 7.75]  # at once, then 0.5, 1, 2, 4 s
    assert reopens[5] - reopens[4] == 4.0  # capped
    assert [what for _, what in happened if what != "reopen"] == ["tell", "recovered"]
    assert dict((what, t) for t, what in happened if what != "reopen") == {"tell": 3.25, "recovered": 15.0}  # 3 s after it was noticed


def test_silence_warns_once_reopens_only_while_nobody_reads_and_says_when_sound_is_back() -> None:
    watch = SilenceWatch()
    seen = []
    for step in range(0, 60):
        now = step / 4
        sound = now if now < 1 or now >= 12 else 1.0
        reading = 5 <= now < 9  # the gate is open: no reopen then
        decision = watch.update(now, StreamHealth(0.0, now, ended=False, last_sound=sound), reading)
        seen += [(now, what) for what, on in (("reopen", decision.reopen), ("tell", decision.tell),
                                               ("recovered", decision.recovered)) if on]
    assert seen == [(2.75, "tell"), (4.0, "reopen"), (9.0, "reopen"), (12.0, "recovered")], seen


def test_capture_ring_hands_out_what_was_heard_before_the_release_then_nothing() -> None:
    ring = _CaptureRing()
    block = 441  # odd blocks, as a resampled device delivers them
    t = 10.0
    samples = np.arange(1, 4 * FRAME_SAMPLES + 1, dtype=np.int16)  # non-zero, so cuts show
    release = t + (2 * FRAME_SAMPLES + 300) / RATE  # 300 samples into the third frame
    starts = list(range(0, len(samples), block))

    def push(start: int) -> None:
        chunk = samples[start:start + block]
        ring.push(chunk, t + (start + len(chunk)) / RATE)

    for start in starts[:5]:  # up to sample 2205: the release is not reached yet
        push(start)
    ring.end_capture(release)
    out = [ring.pop(), ring.pop()]
    assert ring.pop() is None
    assert not ring.capture_done()  # the device has not delivered up to the release yet
    for start in starts[5:]:
        push(start)
    out.append(ring.pop())
    assert ring.capture_done()
    assert ring.pop() is None
    sent = np.concatenate(out)
    assert np.count_nonzero(sent) == 2 * FRAME_SAMPLES + 300
    assert np.array_equal(sent[:2 * FRAME_SAMPLES + 300], samples[:2 * FRAME_SAMPLES + 300])
    ring.clear()  # the next press: capturing again
    ring.push(samples[:FRAME_SAMPLES], t + 5)
    assert ring.pop() is not None
