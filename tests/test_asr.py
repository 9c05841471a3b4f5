"""Offline recognition of real (synthetic) speech against the responder's grammar."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.realtime.asr import Recognition, Recognizer, jsgf_grammar
from server.realtime.responder import Responder
from server.realtime.tts import Synthesizer
from rig.speech_samples import make_speech_wav, missing_tools, read_wav_int16

# (phrase, espeak voice, words a minute): a spread of intents, both voices, several speeds.
IN_GRAMMAR = [
    ("what time is it", "en-us", 140),
    ("what is the date", "en-us", 150),
    ("what day is it", "en", 140),
    ("hello", "en-us", 140),
    ("good morning", "en", 160),
    ("what is your name", "en-us", 130),
    ("what can you do", "en", 150),
    ("thank you", "en-us", 170),
    ("goodbye", "en-us", 140),
    ("what did i say before", "en", 140),
    ("what is three plus four", "en-us", 140),
    ("what is six times seven", "en", 130),
    ("what is nine minus two", "en-us", 160),
    ("what is ten divided by two", "en-us", 140),
    ("what was my last question", "en", 170),
]
OUT_OF_GRAMMAR = [
    "the weather in paris tomorrow",
    "play some music please",
    "turn off the lights in the kitchen",
    "what is the capital of france",
    "tell me a joke",
]


@pytest.fixture(scope="module")
def responder() -> Responder:
    return Responder()


@pytest.fixture(scope="module")
def recognizer(responder: Responder) -> Recognizer:
    return Recognizer(responder.phrases)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, int]]:
    """Every test utterance, spoken once per module at 48 kHz like WebRTC audio."""
    if missing_tools():
        pytest.fail(f"missing {missing_tools()}: run ./bootstrap.sh test, which installs them")
    folder = tmp_path_factory.mktemp("speech")
    jobs = IN_GRAMMAR + [(text, "en-us", 140) for text in OUT_OF_GRAMMAR]

    def make(index: int) -> tuple[str, tuple[np.ndarray, int]]:
        text, voice, speed = jobs[index]
        path = make_speech_wav(text, folder / f"u{index}.wav", voice=voice, speed=speed)
        return text, read_wav_int16(path)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(make, range(len(jobs))))


def test_in_grammar_phrases_are_recognised_exactly(
    recognizer: Recognizer, speech: dict[str, tuple[np.ndarray, int]]
) -> None:
    results = {text: recognizer.recognize(*speech[text]) for text, _, _ in IN_GRAMMAR}
    assert all(rate == 48000 for _, rate in speech.values())
    assert results["what time is it"] == Recognition("what time is it", True, results["what time is it"].score,
                                                     results["what time is it"].elapsed_ms)
    exact = [text for text, heard in results.items() if heard.text == text]
    assert len(exact) >= 12, {t: r.text for t, r in results.items() if r.text != t}
    assert all(0 < r.elapsed_ms < 5000 for r in results.values())  # sanity, not a speed target


def test_out_of_grammar_speech_and_noise_are_mostly_rejected(
    recognizer: Recognizer, speech: dict[str, tuple[np.ndarray, int]]
) -> None:
    noise = (np.random.default_rng(7).standard_normal(96000) * 3000).astype(np.int16)
    results = [recognizer.recognize(*speech[text]) for text in OUT_OF_GRAMMAR]
    results.append(recognizer.recognize(noise, 48000))
    rejected = [r for r in results if not r.accepted and r.text is None]
    assert len(rejected) >= len(results) - 1, results


def test_same_audio_same_answer_and_loud_noise_is_not_a_word(recognizer: Recognizer) -> None:
    # White noise at -21 dBFS once came back as an accepted "bye" whenever it was the
    # first decode: state carried between decodes made the two searches incomparable.
    noise = (np.random.default_rng(0).standard_normal(96000) * 3000).astype(np.int16)
    fresh = Recognizer(["hello", "bye", "what time is it"])
    first, again = fresh.recognize(noise, 48000), fresh.recognize(noise, 48000)
    assert first.text is None and not first.accepted
    assert first.score == again.score
    assert recognizer.recognize(noise, 48000).text is None


def test_the_margin_separates_good_from_bad(recognizer: Recognizer, speech: dict[str, tuple[np.ndarray, int]]) -> None:
    good = recognizer.recognize(*speech["what is your name"]).score
    bad = recognizer.recognize(*speech["play some music please"]).score
    assert good > bad + 10


@pytest.mark.parametrize("seconds", [0.0, 0.1, 2.0])
def test_silence_is_nothing_and_fast(recognizer: Recognizer, seconds: float) -> None:
    heard = recognizer.recognize(np.zeros(int(48000 * seconds), dtype=np.int16), 48000)
    assert heard.text is None and not heard.accepted and heard.score == float("-inf")
    assert heard.elapsed_ms < 200  # no decode at all


def test_too_short_a_sound_is_nothing(recognizer: Recognizer, speech: dict[str, tuple[np.ndarray, int]]) -> None:
    pcm, rate = speech["hello"]
    loudest = int(np.argmax(np.abs(pcm)))
    assert recognizer.recognize(pcm[loudest : loudest + rate // 10], rate).text is None


def test_digital_silence_around_speech_and_other_rates(
    recognizer: Recognizer, speech: dict[str, tuple[np.ndarray, int]]
) -> None:
    # A muted push-to-talk path sends exact zeros: the dither keeps the model's noise estimate sane.
    pcm, rate = speech["what time is it"]
    gap = np.zeros(rate, dtype=np.int16)
    assert recognizer.recognize(np.concatenate([gap, pcm, gap]), rate).text == "what time is it"
    at_16k = pcm[::3]  # 48 kHz → 16 kHz (espeak's voice has little above 8 kHz)
    assert recognizer.recognize(at_16k, 16000).text == "what time is it"


def test_synthesizer_round_trip(recognizer: Recognizer, responder: Responder) -> None:
    """What the offline server's own tests do: its voice, heard by its ear."""
    synthesizer = Synthesizer()
    try:
        phrases = ["what time is it", "what is two plus two", "who are you", "what did i say before", "hi"]
        heard = [recognizer.recognize(synthesizer.synthesize_blocking(p), 48000).text for p in phrases]
    finally:
        synthesizer.close()
    assert heard == phrases


def test_recognizer_is_thread_confined(recognizer: Recognizer) -> None:
    errors: list[BaseException] = []

    def use() -> None:
        try:
            recognizer.recognize(np.zeros(48000, dtype=np.int16), 48000)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    assert len(errors) == 1


def test_phrases_with_unknown_words_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    recognizer = Recognizer(["hello", "hello zzqxv", "hello"])
    assert recognizer.phrases == ("hello",)
    assert "zzqxv" in caplog.text
    with pytest.raises(ValueError):
        Recognizer(["zzqxv"])


def _language(grammar: str) -> set[str]:
    """Every sentence of a grammar in the subset jsgf_grammar() writes (alternatives, [ ], rule refs)."""
    rules = dict(re.findall(r"^(?:public )?(<\w+>) = (.*);$", grammar, re.MULTILINE))

    def expand(body: str) -> set[str]:
        optional = body.startswith("[ ")
        inner = body[2:-2] if optional else body
        sentences = {""} if optional else set()
        for alternative in inner.split(" | "):
            word, _, ref = alternative.partition(" ")
            tails = expand(rules[ref]) if ref else {""}
            sentences |= {f"{word} {tail}".strip() for tail in tails}
        return sentences

    top = re.search(r"^public <\w+> = (<\w+>);$", grammar, re.MULTILINE)
    assert top is not None
    return expand(rules[top.group(1)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["what", "is", "one", "two", "plus", "by", "hi"]), min_size=1, max_size=5)
                .map(" ".join), min_size=1, max_size=12))
def test_grammar_accepts_exactly_the_phrases(phrases: list[str]) -> None:
    assert _language(jsgf_grammar(phrases)) == set(phrases)


def test_grammar_shares_structure(responder: Responder) -> None:
    grammar = jsgf_grammar(responder.phrases)
    assert _language(grammar) == set(responder.phrases)
    # 383 phrases, yet far fewer rules than phrases: suffixes like "plus <zero..ten>" are shared.
    assert grammar.count("\n") < len(responder.phrases) // 3
