"""The window on a real desktop, used the way a person uses it (../shared/TESTING.md, "A real desktop").

The real app (`main.py`, local provider, its embedded server) runs on a private Xvfb with
openbox and X's default autorepeat; Space is held through XTEST (xdotool) while speech
plays into the private PulseAudio microphone, and the speaker is recorded. What the app
did is read from outside: the JSONL transcript and the log under its private HOME.

Select these alone with `pytest -m desktop`; they also run in the normal suite.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from base.pcm import level_dbfs
from rig import desktop as desktop_rig
from rig.desktop import Desktop, DesktopApp
from rig.pulse_rig import RATE, PulseRig, SpeakerRecording
from rig.server_process import private_env
from rig.speech_samples import make_speech_wav, missing_tools as missing_speech_tools, read_wav_int16
from core.tools.builtin import calculate
from server.realtime.responder import Responder, answer_tool_output, normalize

ROOT = Path(__file__).resolve().parent.parent
_missing = desktop_rig.missing_tools() + missing_speech_tools()
pytestmark = [
    pytest.mark.desktop,
    pytest.mark.timeout(240),
    pytest.mark.skipif(bool(_missing), reason=f"desktop tools missing ({', '.join(_missing)}): ./bootstrap.sh test installs them"),
]

# Ten questions with answers that do not depend on the clock, all different, so a turn
# answered twice or out of order shows.
# Each is recognised with a wide margin straight from espeak (some others, "what is five plus
# five" say, are misheard even then: that would test the recogniser, not the window).
QUESTIONS = (
    "what is three plus four", "what is your name", "what is ten minus three", "thank you",
    "what is eight divided by two", "what is three times three", "what is two plus two",
    "what is five minus one",
    "what is six plus three", "what is nine minus two",
)
SPEECH_THRESHOLD = 300  # int16 peak: below this espeak's output is silence
TAIL_KEPT_S = 0.02  # espeak ends with ~430 ms of silence; keep 20 ms so release follows the last word
LEAD_IN_S = 0.15  # a person presses, then starts speaking
FRAME = RATE // 50  # 20 ms
AUDIBLE_DBFS = -40.0
ANSWER_TIMEOUT_S = 20.0
SETTLE_S = 2.0  # after the last answer: time for any extra (wrong) turn to show up
STALL_S = 0.6  # a hold this much longer than planned means the rig's playback stalled


def _trimmed_speech(text: str, directory: Path) -> np.ndarray:
    samples, rate = read_wav_int16(make_speech_wav(text, directory / (text.replace(" ", "_") + ".wav")))
    assert rate == RATE
    loud = np.nonzero(np.abs(samples.astype(np.int32)) > SPEECH_THRESHOLD)[0]
    return samples[loud[0]: loud[-1] + int(TAIL_KEPT_S * RATE)]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    directory = tmp_path_factory.mktemp("speech")
    return {text: _trimmed_speech(text, directory) for text in (*QUESTIONS, "hello", "what is the date")}


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desktop]:
    with Desktop.started(tmp_path_factory.mktemp("desktop")) as running:
        yield running


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseRig]:
    """A sound server of this module's own: what earlier modules did to the session's rig
    (streams left playing, volumes, moved streams) must not reach the app's microphone."""
    rig = PulseRig(tmp_path_factory.mktemp("desktop-pulse"))
    rig.start()
    try:
        yield rig
    finally:
        rig.stop()


@pytest.fixture(scope="module")
def app(desktop: Desktop, pulse: PulseRig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DesktopApp]:
    with DesktopApp.started(tmp_path_factory.mktemp("app"), desktop, pulse.env) as running:
        yield running
    assert running.proc is not None and running.proc.returncode == 0, running.stderr()[-2000:]
    time.sleep(1.0)  # the embedded server gets SIGTERM from the app's shutdown; give it a moment
    assert not running.orphans(), "processes outlived the app"
    # The app logs only the first few error events; the server counts them all, per call, when it ends.
    calls = re.findall(r"ended after .*?(\d+) error events", running.log("server.log"))
    assert calls and all(n == "0" for n in calls), f"error events per call: {calls}"


@pytest.fixture
def focused(desktop: Desktop, app: DesktopApp) -> DesktopApp:
    desktop.activate(app.window)
    return app


@dataclass
class Hold:
    """One held Space: where in the speaker recording it began and ended, and how late the release was."""

    question: str
    pressed_at: int  # sample index in the speaker recording
    released_at: int
    held_s: float
    planned_s: float  # lead-in + speech: what the hold lasts when playback into the mic keeps time
    release_after_speech_ms: float

    @property
    def playback_stalled(self) -> bool:
        """The rig's own playback was late (pacat starved on a loaded machine): the speech came out distorted."""
        return self.held_s > self.planned_s + STALL_S


def ask(desktop: Desktop, pulse: PulseRig, recording: SpeakerRecording, question: str, speech: np.ndarray,
        lead_in_s: float = LEAD_IN_S) -> Hold:
    """Hold Space, speak `speech` into the microphone, let go as soon as the speech has played."""
    pressed_at = len(recording.samples())
    desktop.key_down("space")
    start = time.monotonic()
    try:
        time.sleep(lead_in_s)
        player = pulse.play_into_mic(speech)
        player.wait(30)  # pacat drains: it exits once the last sample has played into the sink
        spoken = time.monotonic()
    finally:
        desktop.key_up("space")
    released = time.monotonic()
    return Hold(question, pressed_at, len(recording.samples()), released - start, lead_in_s + len(speech) / RATE,
                (released - spoken) * 1000)


def wait_for_answer(app: DesktopApp, recording: SpeakerRecording, answers_before: int) -> None:
    """Until one more answer is in the transcript and the speaker has gone quiet after it."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while _count(app, "assistant") <= answers_before:
        assert time.monotonic() < deadline, (f"no answer within {ANSWER_TIMEOUT_S:.0f} s; log: {app.log()[-2000:]}"
                                             f"\nserver log: {app.log('server.log')[-2000:]}")
        time.sleep(0.1)
    heard = False
    while time.monotonic() < deadline:
        tail = recording.samples()[-RATE // 2:]
        loud = level_dbfs(tail) > AUDIBLE_DBFS
        heard = heard or loud
        if heard and not loud:
            return
        time.sleep(0.1)


def _count(app: DesktopApp, role: str) -> int:
    return sum(1 for message in app.messages() if message.get("role") == role)


def audible_seconds(samples: np.ndarray) -> float:
    """How much of `samples` is sound (20 ms frames above AUDIBLE_DBFS)."""
    frames = len(samples) // FRAME
    return sum(level_dbfs(samples[i * FRAME:(i + 1) * FRAME]) > AUDIBLE_DBFS for i in range(frames)) * FRAME / RATE


def run_holds(desktop: Desktop, pulse: PulseRig, app: DesktopApp, speech: dict[str, np.ndarray],
              questions: tuple[str, ...], lead_in_s: float = LEAD_IN_S) -> tuple[list[Hold], np.ndarray, list[dict], str]:
    """Ask each question with one held Space; (holds, speaker recording, new transcript messages, new log).

    The "log" is the app's log file and its stderr (where ALSA reports underruns) since the first hold.
    """
    messages_before, log_before, stderr_before = len(app.messages()), len(app.log()), len(app.stderr())
    recording = pulse.record_speaker()
    holds = []
    try:
        for question in questions:
            answers = _count(app, "assistant")
            holds.append(ask(desktop, pulse, recording, question, speech[question], lead_in_s))
            wait_for_answer(app, recording, answers)
        time.sleep(SETTLE_S)
    finally:
        audio = recording.stop()
    return holds, audio, app.messages()[messages_before:], app.log()[log_before:] + app.stderr()[stderr_before:]


def expected_answer(responder: Responder, question: str) -> str:
    """What the local server says: the app declares its built-in tools, so arithmetic is
    answered through the real calculator tool, the rest by the server itself."""
    request = responder.tool_request(question, {"calculate"})
    if request is None:
        return responder.answer(question, []).text
    output = json.dumps(calculate(**request.arguments))
    return answer_tool_output(request, output).text


def check_one_turn_per_hold(holds: list[Hold], audio: np.ndarray, messages: list[dict], log: str) -> None:
    """Exactly one user turn and one right answer per hold, each answer audible, no server error.

    Turns are counted strictly. Only where the rig's own playback into the microphone
    measurably stalled (a loaded machine) may that one question be misheard: then the
    test would be judging the recogniser on distorted speech, not the window.
    """
    responder = Responder()
    said = [normalize(m["content"]) for m in messages if m["role"] == "user"]
    answered = [m["content"] for m in messages if m["role"] == "assistant"]
    problems = [line for line in log.splitlines() if "error event" in line or "less than 100 ms" in line]
    report = (f"\nasked:    {[h.question for h in holds]}\nheard:    {said}\nanswered: {answered}"
              f"\nstalled playback: {[h.question for h in holds if h.playback_stalled]}"
              f"\nALSA underruns in the app (a loaded machine): {log.count('underrun')}"
              f"\nproblems in the log ({len(problems)}):\n" + "\n".join(problems[:20]))
    assert not problems, "the server reported errors" + report
    # A turn the server could not make out has an answer ("Sorry…") but no user line.
    assert len(answered) == len(holds) and len(said) <= len(holds), "one hold must be exactly one turn" + report
    excused = 0
    for hold, answer in zip(holds, answered):
        if hold.question in said and answer == expected_answer(responder, hold.question):
            continue
        assert hold.playback_stalled, f"{hold.question!r} was not heard whole and answered right" + report
        excused += 1
    assert excused <= len(holds) // 4, "the machine is too loaded to judge: rerun" + report
    ends = [h.pressed_at for h in holds[1:]] + [len(audio)]
    for hold, end in zip(holds, ends):
        sound = audible_seconds(audio[hold.released_at:end])
        assert sound >= 0.5, f"the answer to {hold.question!r} was not heard on the speaker ({sound:.2f} s of sound)"


def test_window_appears_on_a_real_desktop(desktop: Desktop, app: DesktopApp, tmp_path: Path):
    assert desktop.autorepeat() == desktop_rig.Autorepeat(True, 660, 25), "the rig must keep X's default autorepeat"
    x, y, width, height = desktop.window_geometry(app.window)
    assert width >= 600 and height >= 400, (width, height)
    desktop.activate(app.window)
    # A click inside the window (the empty conversation area) keeps it the active window.
    desktop.click(app.window, width // 4, height // 2)
    assert desktop.active_window() == app.window
    shot = desktop.screenshot(tmp_path / "desktop.png")
    colours = desktop.run("identify", "-format", "%k", str(shot))
    crop = desktop.run("convert", str(shot), "-crop", f"{width}x{height}+{x}+{y}", "-format", "%k", "info:")
    assert int(colours) > 100 and int(crop) > 100, f"a uniform screenshot ({colours} / {crop} colours): nothing drawn"
    print(f"screenshot: {shot}")


def test_ten_held_questions_give_ten_turns_and_ten_answers(desktop, pulse, focused, speech):
    holds, audio, messages, log = run_holds(desktop, pulse, focused, speech, QUESTIONS)
    print("holds (s):", [round(h.held_s, 2) for h in holds],
          "release after speech (ms):", [round(h.release_after_speech_ms) for h in holds])
    assert max(h.release_after_speech_ms for h in holds) < 250, "the rig released too late to test clipping"
    check_one_turn_per_hold(holds, audio, messages, log)


@pytest.mark.parametrize(("question", "hold_s"), [("hello", 1.0), ("what is the date", 3.0)], ids=["short-1s", "long-3s"])
def test_short_and_long_holds_are_one_turn_each(desktop, pulse, focused, speech, question, hold_s):
    # The speech comes at the end of the hold: the release still follows the last word at once.
    lead_in = hold_s - len(speech[question]) / RATE
    assert lead_in > 0.1, f"{question!r} is longer than a {hold_s} s hold"
    holds, audio, messages, log = run_holds(desktop, pulse, focused, speech, (question,), lead_in_s=lead_in)
    assert holds[0].held_s >= hold_s - 0.05, holds[0]  # longer only by pacat's start-up (see playback_stalled)
    check_one_turn_per_hold(holds, audio, messages, log)


def test_display_without_x_server_says_so_in_one_sentence(tmp_path: Path):
    free = next(n for n in range(99, 999) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                and not Path(f"/tmp/.X{n}-lock").exists())
    env = {k: v for k, v in private_env(tmp_path, None).items() if k not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["DISPLAY"] = f":{free}"
    result = subprocess.run([sys.executable, str(ROOT / "main.py")], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])  # not -6 (SIGABRT) or a core dump
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"DISPLAY=:{free}" in lines[0], result.stderr[-2000:]
    assert "qt.qpa" not in result.stderr and "Traceback" not in result.stderr
