"""Barge-in by voice: the rule on hand-made frames (tables, a fake clock), then on
sequences recorded from the real WebRTC processor in synthetic rooms: echo only (the
assistant must never interrupt herself) and echo plus the user's voice (she must stop
within 300 ms of the user's first word)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_echo_canceller import Scene, make_scene, run_canceller, speech  # noqa: F401 - a fixture

from base.pcm import FRAME_SAMPLES, FRAME_SECONDS, level_dbfs
from core.echo_canceller import EchoCanceller
from core.voice_barge_in import VoiceBargeIn
from rig.speech_samples import make_speech_wav, missing_tools, read_wav_int16

ECHO = (0.9, -25.0, -58.0)  # speech-like, but the canceller took 33 dB off: the assistant's own voice
VOICE = (0.9, -22.0, -24.0)  # kept its energy through the canceller, well above the floor
QUIET = (0.1, -50.0, -60.0)  # the room between words
FAINT = (0.9, -49.0, -49.0)  # speech-like, untouched, but hardly above the floor (-50 dBFS)


def _frames(*runs: tuple[tuple[float, float, float], int]) -> list[tuple[float, float, float]]:
    return [frame for frame, count in runs for _ in range(count)]


# recorded on the rig (a run that cut its answer): the echo coming back after a pause in the
# answer, with 9.7, 9.0, 2.3 and 3.7 dB taken off
RIG_LEAK = [(0.85, -22.8, -32.5), (0.88, -20.9, -29.9), (0.90, -23.8, -26.1), (0.92, -32.4, -36.1)]

# frames fed every 20 ms with the assistant audible; the index of the frame that fires (or None)
RULE = {
    "echo alone never fires": (_frames((QUIET, 5), (ECHO, 200)), None),
    "voice fires after 60 ms of it": (_frames((QUIET, 5), (ECHO, 10), (VOICE, 10)), 17),
    "two voiced frames are a blip": (_frames((QUIET, 5), (VOICE, 2), (ECHO, 20), (VOICE, 2), (ECHO, 20)), None),
    "short pauses between words do not reset it": (_frames((QUIET, 5), (VOICE, 2), (QUIET, 1), (VOICE, 2)), 9),
    "faint speech-like noise does not fire": (_frames((QUIET, 5), (FAINT, 50)), None),
    "low probability does not fire": (_frames((QUIET, 5), ((0.3, -22.0, -24.0), 50)), None),
    "a stream that starts with zeros sets no floor": (_frames(((0.5, -120.0, -120.0), 5), ((0.6, -50.0, -51.0), 50)), None),
    "fires once per answer": (_frames((QUIET, 5), (VOICE, 50)), 7),
    "a frame the canceller took 3-10 dB from counts half": (_frames((QUIET, 5), ((0.9, -25.0, -31.0), 10)), 10),
    "echo let through after a pause does not fire": (_frames((QUIET, 5), (ECHO, 10), (QUIET, 6)) + RIG_LEAK
                                                     + _frames((ECHO, 10)), None),
}


def test_no_voice_while_the_reference_was_just_torn() -> None:
    decider = VoiceBargeIn()
    frames = _frames((QUIET, 5), (VOICE, 150))
    steady = [0.11 + 0.02 * k for k in range(len(frames))]  # the far reference tore just before the first frame
    fired = [k for k, (frame, s) in enumerate(zip(frames, steady)) if decider.update(k * FRAME_SECONDS, *frame, True, s)]
    assert fired == [147]  # steady for 3 s from frame 145 on, then 60 ms of voice


LEAK = (0.9, -25.0, -27.0)  # the assistant's echo let through: to the rule, as good as a voice
FAIR = (0.9, -25.0, -40.0)  # echo cancelled by 15 dB: not untouched, but no proof either

# a tear before frame 0 (and again where `tears` says); the index of the frame that fires
AFTER_A_TEAR = {
    "0.4 s of echo cancelled by 20 dB or more prove the canceller: voice counts again":
        (_frames((QUIET, 5), (ECHO, 20), (VOICE, 10)), (), 27),
    "quiet frames prove nothing": (_frames((QUIET, 40), (VOICE, 10)), (), None),
    "a leak starts the proof over": (_frames((QUIET, 5), (ECHO, 15), (LEAK, 1), (ECHO, 10), (VOICE, 10)), (), None),
    "the user's voice before the proof waits for a steady reference":
        (_frames((QUIET, 5), (ECHO, 10), (VOICE, 150)), (), 152),
    "half-cancelled frames neither prove nor start over": (_frames((QUIET, 5), (ECHO, 10), (FAIR, 20), (ECHO, 10),
                                                                   (VOICE, 10)), (), 47),
    "a new tear starts the proof over": (_frames((QUIET, 5), (ECHO, 15), (ECHO, 10), (VOICE, 10)), (20,), None),
}


@pytest.mark.parametrize("frames,tears,fires_at", list(AFTER_A_TEAR.values()), ids=list(AFTER_A_TEAR))
def test_after_a_tear_voice_waits_for_the_canceller_to_prove_itself(frames, tears, fires_at) -> None:
    decider = VoiceBargeIn()
    fired, torn_at = [], 0
    for k, frame in enumerate(frames):
        torn_at = k if k in tears else torn_at
        if decider.update(k * FRAME_SECONDS, *frame, True, (k - torn_at) * FRAME_SECONDS):
            fired.append(k)
    assert fired == ([] if fires_at is None else [fires_at])


@pytest.mark.parametrize("frames,fires_at", list(RULE.values()), ids=list(RULE))
def test_rule(frames, fires_at) -> None:
    decider = VoiceBargeIn()
    fired = [k for k, (p, mic, cleaned) in enumerate(frames) if decider.update(k * FRAME_SECONDS, p, mic, cleaned, True)]
    assert fired == ([] if fires_at is None else [fires_at])


def test_only_while_the_assistant_is_audible_and_rearmed_after() -> None:
    decider = VoiceBargeIn()
    t = iter(np.arange(0, 10, FRAME_SECONDS))
    assert not any(decider.update(next(t), *QUIET, True) for _ in range(5))
    assert not any(decider.update(next(t), *VOICE, False) for _ in range(20))  # the user's own turn
    assert [decider.update(next(t), *VOICE, True) for _ in range(5)] == [False, False, True, False, False]
    decider.update(next(t), *QUIET, False)  # the answer ended
    assert [decider.update(next(t), *VOICE, True) for _ in range(3)] == [False, False, True]


def test_noise_floor_follows_a_louder_room_slowly() -> None:
    decider = VoiceBargeIn()
    decider.update(0.0, *QUIET, True)
    # the room gets 20 dB louder and the canceller passes it: speech-like at first, then just the room
    loud_room = (0.9, -30.0, -31.0)
    fired = [k for k in range(1, 1000) if decider.update(k * FRAME_SECONDS, *loud_room, k > 500)]
    assert fired == []


# --- recorded from the real processor -------------------------------------------------

ANSWERS = [
    ("Here is a rather long answer about the weather in Paris tomorrow: sunshine in the morning, clouds at noon "
     "and rain later in the afternoon, so take an umbrella and a warm coat with you.", "en-us"),
    ("Sure. The train to Berlin leaves at nine fifteen from platform four, and it takes about six hours "
     "with one change in Hanover.", "en-us+f3"),
    ("Goodbye and thank you. See you later. Is there anything else I can help you with today?", "en"),
]
QUESTIONS = [("Stop, stop. What about London instead?", "en-gb"), ("Wait, no, I meant next Tuesday.", "en-us+m3"),
             ("Hey Sandra, cancel that please.", "en-gb+f2")]
SEEDS = (1, 2, 3)
USER_STARTS_S = (2.5, 4.0)
ONSET_DBFS = -40.0  # the user's speech starts at the first frame of their voice above this


def _record(scene: Scene) -> dict:
    _, voice = run_canceller(EchoCanceller(), scene)
    user = [level_dbfs(np.round(f)) for f in scene.user.reshape(-1, FRAME_SAMPLES)]
    onset = next((k for k, level in enumerate(user) if level > ONSET_DBFS), None)
    probability, mic, cleaned = zip(*voice)
    finite = lambda xs: [max(x, -120.0) for x in xs]  # noqa: E731 - JSON has no -inf
    return {"probability": probability, "mic_dbfs": finite(mic), "cleaned_dbfs": finite(cleaned), "onset": onset}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Per-frame (speech probability, mic and cleaned levels) of every scene, saved as JSON test data."""
    if missing := missing_tools():
        pytest.fail(f"speech tools missing ({', '.join(missing)}): run ./bootstrap.sh test")
    folder: Path = tmp_path_factory.mktemp("barge_in")
    answers = [read_wav_int16(make_speech_wav(text, folder / f"a{k}.wav", voice=voice))[0]
               for k, (text, voice) in enumerate(ANSWERS)]
    questions = [read_wav_int16(make_speech_wav(text, folder / f"q{k}.wav", voice=voice, speed=160))[0]
                 for k, (text, voice) in enumerate(QUESTIONS)]
    data: dict[str, list[dict]] = {"echo": [], "talk": []}
    for answer in answers:
        for seed in SEEDS:
            data["echo"].append(_record(make_scene({"answer": answer, "question": questions[0]}, with_user=False, seed=seed)))
            for question in questions:
                for start in USER_STARTS_S:
                    if start * 48000 + len(question) <= len(answer) and seed < 3:
                        data["talk"].append(_record(make_scene({"answer": answer, "question": question},
                                                               with_user=True, seed=seed, user_at_s=start)))
    (folder / "sequences.json").write_text(json.dumps(data))
    return json.loads((folder / "sequences.json").read_text())


def _first_fire(run: dict) -> int | None:
    decider = VoiceBargeIn()
    for k, frame in enumerate(zip(run["probability"], run["mic_dbfs"], run["cleaned_dbfs"])):
        if decider.update(k * FRAME_SECONDS, *frame, True):
            return k
    return None


def test_never_fires_on_echo_alone(recorded) -> None:
    assert len(recorded["echo"]) == 9
    assert [_first_fire(run) for run in recorded["echo"]] == [None] * 9  # from the first frame, unconverged too


def test_fires_soon_after_the_user_starts_speaking(recorded) -> None:
    delays_ms = []
    for run in recorded["talk"]:
        fired = _first_fire(run)
        assert fired is None or fired >= run["onset"], "fired on the echo before the user spoke"
        delays_ms.append(10_000 if fired is None else (fired - run["onset"]) * 20)
    delays_ms.sort()
    print(f"voice barge-in over {len(delays_ms)} double-talk runs: median {np.median(delays_ms):.0f} ms, "
          f"within 300 ms: {sum(d <= 300 for d in delays_ms)}, all: {delays_ms}")
    assert np.median(delays_ms) <= 200
    # WebRTC's suppressor sometimes swallows a voice as loud as the echo for a whole word
    assert sum(d <= 300 for d in delays_ms) >= 0.85 * len(delays_ms)


def test_probability_alone_would_fire_on_echo(recorded) -> None:
    """Why the rule needs energy: after cancellation the residual echo still scores as speech for long runs."""
    longest = 0
    for run in recorded["echo"]:
        above = np.asarray(run["probability"]) >= 0.5
        run_length = 0
        for value in above:
            run_length = run_length + 1 if value else 0
            longest = max(longest, run_length)
    assert longest * 20 >= 200


@pytest.mark.timeout(90)
def test_voice_stops_the_assistant_on_the_rig(pulse, speech) -> None:
    """A question said into the real microphone over the answer's echo fires within 300 ms of its start."""
    from test_echo_canceller import LEAD_IN, play_on_rig

    far = np.concatenate([np.zeros(LEAD_IN, dtype=np.int16), speech["answer"]])
    question = (speech["question"] * 10 ** (-6 / 20)).astype(np.int16)  # as loud as the echo
    voiced = [k for k, f in enumerate(question[: len(question) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES))
              if level_dbfs(f) > ONSET_DBFS]
    steady = VoiceBargeIn().settings.steady_for_s
    for _ in range(2):
        run = play_on_rig(pulse, far, question=question, question_at_s=4.0)
        # where the question landed in the microphone: its cross-correlation peak (the echo is another voice)
        n = len(run.mic) + len(question)
        corr = np.fft.irfft(np.fft.rfft(run.mic.astype(np.float64), n) * np.conj(np.fft.rfft(question.astype(np.float64), n)), n)
        start = int(np.argmax(corr[: len(run.mic)]))
        onset = (start + voiced[0] * FRAME_SAMPLES) // FRAME_SAMPLES
        last_voiced = (start + voiced[-1] * FRAME_SAMPLES) // FRAME_SAMPLES
        # by design nothing counts while the far reference is freshly torn (the rig's underruns)
        eligible = next(k for k in range(onset, len(run.voice)) if run.voice[k][4] >= steady)
        if eligible < last_voiced - 10:  # at least 200 ms of the question with a steady reference
            break
        print(f"the reference was torn through the question (steady from frame {eligible}, question "
              f"{onset}-{last_voiced}): once more")
    decider = VoiceBargeIn()
    fired = [k for k, frame in enumerate(run.voice) if decider.update(k * FRAME_SECONDS, *frame)]
    print(f"rig voice barge-in: question at frame {onset}, reference steady from {eligible}, fired at {fired}, "
          f"{run.pairing}")
    assert fired, "the user's voice never fired"
    assert fired[0] >= onset, "fired on the echo before the user spoke"
    assert (fired[0] - eligible) * 20 <= 300
