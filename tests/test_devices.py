"""A sound device vanishing mid-call (its PulseAudio module unloaded) gives the user a
message, and the call goes on or ends cleanly: no hang, no traceback.

PulseAudio moves a stream whose device vanished to another device if there is one;
PortAudio then keeps calling back and only the sound tells: a microphone moved to a
dead source delivers exact digital silence. With nowhere to move to, the stream dies
and PortAudio stops calling back. Either way the device is reopened and used again
once it is back (suspended, or its module reloaded), and the user is told in order:
the problem, then that it works again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid

import numpy as np
import pytest

from base.pcm import FRAME_SAMPLES, RATE
from core.audio import DeviceAudio, StreamHealth, _CaptureRing, list_devices, refresh_devices
from core.call.state import Phase
from core.call.engine import CallEngine
from core.call.events import Problem
from core.sound_devices import Device, Recovery, SilenceWatch, SoundDevices
from rig.engine_helpers import Recorder, custom_settings, engine_options
from rig.pulse_rig import PulseRig, dominant_frequency, suspend, tone, unplug
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


# --- the pure policies: reopen with backoff, tell late, say it recovered -------------------------


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
    timed = [ring.pop(), ring.pop()]
    assert [started for started, _ in timed] == pytest.approx([t, t + FRAME_SAMPLES / RATE])  # when each was heard
    out = [frame for _, frame in timed]
    assert ring.pop() is None
    assert not ring.capture_done()  # the device has not delivered up to the release yet
    for start in starts[5:]:
        push(start)
    out.append(ring.pop()[1])
    assert ring.capture_done()
    assert ring.pop() is None
    sent = np.concatenate(out)
    assert np.count_nonzero(sent) == 2 * FRAME_SAMPLES + 300
    assert np.array_equal(sent[:2 * FRAME_SAMPLES + 300], samples[:2 * FRAME_SAMPLES + 300])
    ring.clear()  # the next press: capturing again
    ring.push(samples[:FRAME_SAMPLES], t + 5)
    assert ring.pop() is not None


# --- real streams on the rig: suspended, unplugged and plugged back, missing at start ------------


HEARD_WITHIN_S = 12.0


class _Notices:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def problem(self, message: str) -> None:
        self.seen.append(("problem", message))

    def recovered(self, message: str) -> None:
        self.seen.append(("recovered", message))

    def about(self, device: str) -> list[str]:
        return [kind for kind, message in self.seen if device in message.lower()]


def _sine(freq: float):
    phase = [0]

    def pull(n: int, play_time: float | None = None) -> np.ndarray:
        t = (phase[0] + np.arange(n)) / 48000
        phase[0] += n
        return (np.sin(2 * np.pi * freq * t) * 0.4 * 32767).astype(np.int16)

    return pull


async def _open(notices: _Notices, audio: DeviceAudio | None = None, freq: float = 440) -> SoundDevices:
    devices = SoundDevices(audio or DeviceAudio(None, None), _sine(freq), on_level=lambda _db: None,
                           on_problem=notices.problem, on_recovered=notices.recovered)
    await devices.open()
    return devices


async def _mic_hears_a_tone(rig, devices: SoundDevices, within: float = HEARD_WITHIN_S) -> bool:
    """Press, play a tone into the virtual microphone, read as the outgoing track does."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        devices.discard()
        player = rig.play_into_mic(tone(1000, 0.6))
        frames = []
        for _ in range(45):
            if (frame := devices.read_frame()) is not None:
                frames.append(frame)
            await asyncio.sleep(0.02)
        await asyncio.to_thread(player.wait, 10)
        audio = np.concatenate(frames) if frames else np.zeros(0, np.int16)
        loud = np.abs(audio) > 3000
        if loud.sum() > 0.3 * 48000:
            start = int(np.argmax(loud))
            return abs(dominant_frequency(audio[start:start + 9600]) - 1000) < 30
        await asyncio.sleep(0.5)  # nobody reads between tries: the gate is closed
    return False


async def _speaker_plays(rig, within: float = HEARD_WITHIN_S) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        recording = rig.record_speaker()
        await asyncio.sleep(0.8)
        audio = await asyncio.to_thread(recording.stop)
        loud = np.abs(audio) > 3000
        if loud.sum() > 0.3 * 48000:
            start = int(np.argmax(loud))
            return abs(dominant_frequency(audio[start:start + 9600]) - 440) < 30
    return False


def _told_then_cleared(kinds: list[str]) -> bool:
    """Each problem is followed by a recovered notice, and the last word is 'recovered'."""
    return bool(kinds) and kinds[-1] == "recovered" and all(a != b for a, b in zip(kinds, kinds[1:]))


@pytest.mark.parametrize("kind,name", [("source", "mic"), ("sink", "spk")])
async def test_a_suspended_device_works_again_afterwards(pulse, kind: str, name: str) -> None:
    notices = _Notices()
    devices = await _open(notices)
    try:
        assert await _mic_hears_a_tone(pulse, devices, within=3) and await _speaker_plays(pulse, within=3)
        suspend(pulse, kind, name, True)
        await asyncio.sleep(3.0)
        suspend(pulse, kind, name, False)
        assert await _mic_hears_a_tone(pulse, devices), notices.seen
        assert await _speaker_plays(pulse), notices.seen
        await asyncio.sleep(0.5)
    finally:
        await asyncio.wait_for(devices.close(), 10)
    device = "microphone" if kind == "source" else "speaker"
    kinds = [k for k, message in notices.seen if device in message.lower() and "digital silence" not in message
             and "hears sound again" not in message]
    assert not kinds or _told_then_cleared(kinds), notices.seen


async def test_a_microphone_unplugged_then_plugged_back_is_used_again(pulse) -> None:
    notices = _Notices()
    devices = await _open(notices, freq=0)  # a silent speaker: the moved microphone hears nothing
    try:
        assert await _mic_hears_a_tone(pulse, devices, within=3)
        replug = unplug(pulse, "source_name=mic")
        await asyncio.sleep(5.0)
        replug()
        assert await _mic_hears_a_tone(pulse, devices), notices.seen
        await asyncio.sleep(0.5)
    finally:
        await asyncio.wait_for(devices.close(), 10)
    assert _told_then_cleared(notices.about("microphone")), notices.seen


async def test_a_speaker_unplugged_then_plugged_back_is_used_again(tmp_path) -> None:
    rig = PulseRig(tmp_path / "pulse", speaker_only=True)  # one sink: the stream dies with it
    rig.start()
    import sounddevice as sd

    sd._terminate()
    sd._initialize()
    notices = _Notices()
    keepalive = None
    try:
        devices = await _open(notices)
        try:
            assert await _speaker_plays(rig, within=3)
            replug = unplug(rig, "sink_name=spk")
            await asyncio.sleep(5.0)
            replug()
            keepalive = subprocess.Popen(  # as the rig keeps its sinks busy (TESTING.md)
                ["pacat", "--playback", "--device=spk", "--latency-msec=20", "--rate=48000", "--channels=1",
                 "/dev/zero"], env={**os.environ, **rig.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert await _speaker_plays(rig), notices.seen
            await asyncio.sleep(0.5)
        finally:
            await asyncio.wait_for(devices.close(), 10)
    finally:
        if keepalive is not None:
            keepalive.terminate()
            keepalive.wait(5)
        rig.stop()
        sd._terminate()
        sd._initialize()
    assert notices.about("speaker")[:1] == ["problem"], notices.seen
    assert _told_then_cleared(notices.about("speaker")), notices.seen


async def test_a_saved_device_that_is_missing_falls_back_to_the_default(pulse) -> None:
    notices = _Notices()
    devices = await _open(notices, DeviceAudio("Headset that is not here", "Speaker that is not here"))
    try:
        assert await _mic_hears_a_tone(pulse, devices, within=3)
        assert await _speaker_plays(pulse, within=3)
    finally:
        await devices.close()
    told = [message for kind, message in notices.seen if "not available" in message]
    assert len(told) == 2 and "Headset that is not here" in told[0] and "Speaker that is not here" in told[1], notices.seen


def test_the_device_list_refreshes_only_while_no_stream_is_open(pulse, private_home) -> None:
    """A device that appears (here an ALSA device defined while running) shows after a
    refresh; with a stream open the refresh waits, since it would kill the stream."""
    name = f"sandra_new_{uuid.uuid4().hex[:6]}"
    assert name not in [d.name for d in list_devices()]
    (private_home / ".asoundrc").write_text(f"pcm.{name} {{ type pulse }}\nctl.{name} {{ type pulse }}\n")
    from core.audio import MicrophoneSource

    mic = MicrophoneSource(None)
    try:
        assert refresh_devices() is False
        time.sleep(0.5)
        assert name not in [d.name for d in list_devices(refresh=True)]
        assert mic.health().last_callback is not None  # the stream survived
    finally:
        mic.close()
    assert name in [d.name for d in list_devices(refresh=True)]


def test_capture_ring_sheds_a_backlog_that_was_never_needed() -> None:
    ring = _CaptureRing(frames=6, calm_reads=10)
    frame = np.ones(FRAME_SAMPLES, dtype=np.int16)
    t = 0.0
    for _ in range(6):  # the ring filled before anyone read it
        t += FRAME_SAMPLES / RATE
        ring.push(frame, t)
    depths = []
    for _ in range(30):  # then one frame comes per frame read: the backlog would stay forever
        t += FRAME_SAMPLES / RATE
        ring.push(frame, t)
        assert ring.pop() is not None  # never starved
        depths.append(ring.depth)
    assert depths[0] == 5 and depths[-1] == 0, depths  # one frame waits before each read, none after


def test_capture_ring_never_sheds_a_loud_frame() -> None:
    ring = _CaptureRing(frames=6, calm_reads=10)
    loud = np.full(FRAME_SAMPLES, 8000, dtype=np.int16)
    t = 0.0
    for _ in range(36):
        t += FRAME_SAMPLES / RATE
        ring.push(loud, t)
        if _ >= 5:
            assert ring.pop() is not None
    assert ring.depth == 5  # speech keeps its delay rather than lose a word


async def test_finish_capture_returns_once_the_frames_before_the_release_are_read(pulse) -> None:
    """What the engine does at push-to-talk release: keep the track reading, await
    finish_capture(release), then commit."""
    notices = _Notices()
    devices = await _open(notices)
    read: list[np.ndarray] = []
    reading = True

    async def track() -> None:  # the outgoing track's 20 ms rhythm
        while reading:
            if (frame := devices.read_frame()) is not None:
                read.append(frame)
            await asyncio.sleep(0.02)

    task = asyncio.get_running_loop().create_task(track())
    player = pulse.play_into_mic(tone(1000, 1.5))
    try:
        devices.discard()  # press
        await asyncio.sleep(1.0)  # mid-tone
        released = time.monotonic()
        count_at_release = len(read)
        assert await devices.finish_capture(released)
        waited = time.monotonic() - released
        after_release = read[count_at_release:]
        await asyncio.sleep(0.2)
        assert len(read) == count_at_release + len(after_release)  # nothing more once done
    finally:
        reading = False
        await task
        await asyncio.to_thread(player.wait, 10)
        await devices.close()
    assert after_release and np.abs(np.concatenate(after_release)).max() > 3000, "the tone before the release was lost"
    assert waited < 0.2, waited
