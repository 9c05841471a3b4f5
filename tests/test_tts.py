"""Speech synthesis through libespeak-ng: real audio out, one worker thread whoever calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from server.realtime.tts import OUTPUT_RATE, Synthesizer, english_voice

PHRASE = "what time is it"


@pytest.fixture(scope="module")
def synth() -> Iterator[Synthesizer]:
    synthesizer = Synthesizer()
    yield synthesizer
    synthesizer.close()


def _rms_dbfs(pcm: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) / 32768))


def test_output_is_loud_int16_48k_of_plausible_length(synth: Synthesizer) -> None:
    short = synth.synthesize_blocking(PHRASE)
    long = synth.synthesize_blocking("Today is Tuesday, March 5, 2024. I can tell you the time and the date.")
    assert short.dtype == np.int16 and short.ndim == 1
    assert 0.6 < len(short) / OUTPUT_RATE < 2.5  # four words at 165 words a minute
    assert len(long) > 3 * len(short)
    assert _rms_dbfs(short) > -30
    # 48 kHz from a 22,050 Hz voice: nothing left above the source's Nyquist frequency.
    spectrum = np.abs(np.fft.rfft(short.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(short), 1 / OUTPUT_RATE)
    assert spectrum[freqs > 12000].sum() < 0.01 * spectrum.sum()


def test_rate_changes_duration() -> None:
    slow, fast = Synthesizer(rate_wpm=110), Synthesizer(rate_wpm=250)
    try:
        assert len(slow.synthesize_blocking(PHRASE)) > 1.5 * len(fast.synthesize_blocking(PHRASE))
    finally:
        slow.close()
        fast.close()


@pytest.mark.parametrize(
    ("voice", "espeak_voice"),
    [("marin", "en-us"), ("alloy", "en-us"), ("de", "en-us"), ("", "en-us"), ("EN-GB", "en"), ("en-029", "en-029")],
)
def test_any_voice_name_speaks_english(voice: str, espeak_voice: str) -> None:
    assert english_voice(voice) == espeak_voice
    synthesizer = Synthesizer(voice=voice)
    try:
        assert len(synthesizer.synthesize_blocking(PHRASE)) > 0.6 * OUTPUT_RATE
    finally:
        synthesizer.close()


def test_a_missing_english_voice_falls_back_once(caplog: pytest.LogCaptureFixture) -> None:
    synthesizer = Synthesizer(voice="en-nowhere")
    try:
        first, second = synthesizer.synthesize_blocking(PHRASE), synthesizer.synthesize_blocking(PHRASE)
    finally:
        synthesizer.close()
    assert len(first) > 0.6 * OUTPUT_RATE and abs(len(first) - len(second)) < 0.01 * len(first)
    assert caplog.text.count("en-nowhere") == 1


def test_empty_text_gives_a_blink_of_silence_not_an_error(synth: Synthesizer) -> None:
    pcm = synth.synthesize_blocking("")
    assert len(pcm) < 0.05 * OUTPUT_RATE and not pcm.any()


def test_concurrent_threads_all_go_through_one_worker(synth: Synthesizer) -> None:
    reference = len(synth.synthesize_blocking(PHRASE))
    lengths: list[int] = []
    errors: list[BaseException] = []

    def speak() -> None:
        try:
            for _ in range(3):
                lengths.append(len(synth.synthesize_blocking(PHRASE)))
        except BaseException as exc:  # surfaced below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=speak) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    # Interleaved library calls would mix or lose chunks; serialised ones agree to a few samples.
    assert len(lengths) == 12 and all(abs(n - reference) < 0.01 * reference for n in lengths)
    assert {t.name for t in threading.enumerate() if t.name.startswith("sandra-tts")}


async def test_concurrent_tasks_across_synthesizers_do_not_block_the_loop() -> None:
    first, second = Synthesizer(), Synthesizer(voice="en", rate_wpm=200)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticking = asyncio.create_task(ticker())
    try:
        texts = [f"what is {n} plus {n}" for n in ("one", "two", "three", "four")]
        results = await asyncio.gather(*(s.synthesize(t) for s in (first, second) for t in texts))
    finally:
        ticking.cancel()
        first.close()
        second.close()
    assert all(len(r) > 0.5 * OUTPUT_RATE and _rms_dbfs(r) > -30 for r in results)
    assert ticks > 1  # the loop kept running while the workers synthesised


def test_closed_synthesizer_refuses_work() -> None:
    synthesizer = Synthesizer()
    synthesizer.close()
    with pytest.raises(RuntimeError):
        synthesizer.synthesize_blocking(PHRASE)


def _pitch_hz(samples: np.ndarray) -> float:
    """The median fundamental of the voiced 40 ms windows (autocorrelation, 60-400 Hz)."""
    x = samples.astype(np.float64)
    window, found = 1920, []
    for start in range(0, len(x) - window, window):
        chunk = x[start:start + window] - x[start:start + window].mean()
        if np.sqrt(np.mean(chunk ** 2)) < 1000:
            continue
        corr = np.correlate(chunk, chunk, "full")[window - 1:]
        low, high = OUTPUT_RATE // 400, OUTPUT_RATE // 60
        found.append(OUTPUT_RATE / (low + int(np.argmax(corr[low:high]))))
    return float(np.median(found))


def test_the_session_voice_is_the_one_spoken(synth: Synthesizer) -> None:
    default = synth.synthesize_blocking(PHRASE)
    female = synth.synthesize_blocking(PHRASE, voice="en-us+f3")
    assert _pitch_hz(female) > 1.3 * _pitch_hz(default), (_pitch_hz(default), _pitch_hz(female))
    # the synthesizer's own voice is untouched by a call's choice
    again = synth.synthesize_blocking(PHRASE)
    assert abs(_pitch_hz(again) - _pitch_hz(default)) < 0.1 * _pitch_hz(default)
