"""Recognition while the audio arrives: as accurate as decoding the whole utterance at once.

The reference here is the batch decode the server did before it streamed: both passes
over the whole padded utterance with `full_utt=True` (the utterance's own cepstral
mean). Streaming must match its accuracy on the same synthetic speech.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pocketsphinx
import pytest

from server.realtime import asr
from server.realtime.asr import Recognition, Recognizer, jsgf_grammar
from server.realtime.responder import Responder
from server.realtime.speech import SpeechEngine
from rig.speech_samples import make_speech_wav, missing_tools, read_wav_int16

pytestmark = pytest.mark.timeout(600)

RATE = 48000
FRAME = RATE // 50  # 20 ms, as WebRTC delivers it
IN_GRAMMAR = [
    ("what time is it", "en-us", 150),
    ("what is the date", "en", 140),
    ("hello", "en", 160),
    ("good evening", "en-us", 140),
    ("who are you", "en-us", 170),
    ("help me", "en", 140),
    ("thanks a lot", "en-us", 130),
    ("see you later", "en", 150),
    ("what did i just say", "en-us", 140),
    ("what is three plus four", "en-us", 140),
    ("what is eight times five", "en", 160),
    ("what is seven minus seven", "en-us", 130),
    ("what is six divided by three", "en", 150),
    ("what is one plus ten", "en-us", 170),
]
OUT_OF_GRAMMAR = ["open the garage door", "how far away is the moon", "remind me to buy milk",
                  "what is the capital of spain"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    if missing_tools():
        pytest.fail(f"missing {missing_tools()}: run ./bootstrap.sh test, which installs them")
    folder = tmp_path_factory.mktemp("speech")
    jobs = IN_GRAMMAR + [(text, "en-us", 140) for text in OUT_OF_GRAMMAR]

    def make(index: int) -> tuple[str, np.ndarray]:
        text, voice, speed = jobs[index]
        samples, rate = read_wav_int16(make_speech_wav(text, folder / f"u{index}.wav", voice=voice, speed=speed))
        assert rate == RATE
        return text, samples

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(make, range(len(jobs))))


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer(Responder().phrases)


def streamed(recognizer: Recognizer, pcm: np.ndarray, piece: int = FRAME) -> Recognition:
    utterance = recognizer.begin(RATE)
    for start in range(0, len(pcm), piece):
        utterance.feed(pcm[start : start + piece])
    return utterance.finish()


def batch_reference(phrases: tuple[str, ...]):
    """The decode the server did before it streamed: whole utterance, batch normalisation."""
    decoder = pocketsphinx.Decoder(lm=None, bestpath=False, compallsen=True, loglevel="FATAL")
    decoder.add_jsgf_string("g", jsgf_grammar(phrases))
    decoder.add_allphone_file("p", None)
    log_math = decoder.get_logmath()

    def decode(search: str, audio: bytes) -> tuple[str | None, float, int]:
        decoder.activate_search(search)
        decoder.reinit_feat()
        decoder.start_utt()
        decoder.process_raw(audio, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return None, 0.0, 0
        score = sum(log_math.log(s.ascore) for s in decoder.seg())
        frames = sum(s.end_frame - s.start_frame + 1 for s in decoder.seg()
                     if s.word not in ("<s>", "</s>", "<sil>", "(NULL)", "SIL") and not s.word.startswith("["))
        return hyp.hypstr.strip(), score, frames

    def recognize(pcm: np.ndarray) -> str | None:
        pad = np.zeros(RATE // 4)
        audio = np.concatenate([pad, pcm.astype(np.float64), pad])[::3]  # 16 kHz; espeak has little above 8 kHz
        audio += np.random.default_rng(0).standard_normal(len(audio)) * 32768 * 10 ** (-50 / 20)
        raw = np.clip(audio, -32768, 32767).astype(np.int16).tobytes()
        text, grammar_score, frames = decode("g", raw)
        if text is None or frames == 0:
            return None
        _, loop_score, _ = decode("p", raw)
        return text if (grammar_score - loop_score) / frames > asr.ACCEPT_MARGIN else None

    return recognize


def test_streaming_in_20_ms_frames_is_as_accurate_as_batch(recognizer: Recognizer,
                                                           speech: dict[str, np.ndarray]) -> None:
    batch = batch_reference(recognizer.phrases)
    reference = {text: batch(speech[text]) for text in speech}
    live = {text: streamed(recognizer, speech[text]) for text in speech}
    in_grammar = [text for text, _, _ in IN_GRAMMAR]
    batch_right = sum(reference[t] == t for t in in_grammar)
    live_right = sum(live[t].text == t for t in in_grammar)
    assert batch_right >= len(in_grammar) - 2, reference  # the reference itself works
    assert live_right >= batch_right, {t: live[t].text for t in in_grammar if live[t].text != t}
    assert not any(live[t].text not in (None, t) for t in in_grammar), "accepted as another phrase"
    batch_accepted = sum(reference[t] is not None for t in OUT_OF_GRAMMAR)
    live_accepted = sum(live[t].accepted for t in OUT_OF_GRAMMAR)
    assert live_accepted <= batch_accepted, {t: live[t] for t in OUT_OF_GRAMMAR}


def test_how_the_audio_is_cut_into_pieces_changes_nothing(recognizer: Recognizer,
                                                          speech: dict[str, np.ndarray]) -> None:
    pcm = speech["what is eight times five"]
    frames = streamed(recognizer, pcm)
    assert frames.text == "what is eight times five"
    for piece in (331, 4 * FRAME + 7, len(pcm)):
        other = streamed(recognizer, pcm, piece)
        assert (other.text, other.accepted, other.score) == (frames.text, frames.accepted, frames.score), piece
    whole = recognizer.recognize(pcm, RATE)
    assert (whole.text, whole.score) == (frames.text, frames.score)


def test_two_utterances_at_once_each_get_their_own_decoders(recognizer: Recognizer,
                                                            speech: dict[str, np.ndarray]) -> None:
    # Two calls speaking at the same time interleave their frames on the one worker thread.
    first, second = speech["hello"], speech["what is one plus ten"]
    a, b = recognizer.begin(RATE), recognizer.begin(RATE)
    for start in range(0, max(len(first), len(second)), FRAME):
        if start < len(first):
            a.feed(first[start : start + FRAME])
        if start < len(second):
            b.feed(second[start : start + FRAME])
    assert b.finish().text == "what is one plus ten"
    assert a.finish().text == "hello"
    abandoned = recognizer.begin(RATE)
    abandoned.feed(second[: RATE // 2])
    abandoned.cancel()
    with pytest.raises(RuntimeError):
        abandoned.feed(second[: FRAME])
    assert streamed(recognizer, first).text == "hello"


def test_streamed_silence_and_noise_are_nothing(recognizer: Recognizer) -> None:
    silence = streamed(recognizer, np.zeros(RATE, dtype=np.int16))
    assert (silence.text, silence.accepted, silence.score) == (None, False, float("-inf"))
    noise = (np.random.default_rng(3).standard_normal(2 * RATE) * 3000).astype(np.int16)
    assert streamed(recognizer, noise).text is None


def _end_of_speech(pcm: np.ndarray) -> int:
    """The sample after the last 20 ms window louder than -45 dBFS."""
    windows = pcm[: len(pcm) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    loud = np.flatnonzero(20 * np.log10(np.sqrt((windows**2).mean(axis=1)) / 32768 + 1e-12) > -45)
    return int(loud[-1] + 1) * FRAME


async def test_a_phrase_released_50_ms_after_its_end_is_heard_whole(speech: dict[str, np.ndarray]) -> None:
    """Through the server's speech engine, fed in real time as a call's track delivers it."""
    pcm = speech["what is three plus four"]
    end = _end_of_speech(pcm)
    assert end < len(pcm) - RATE // 10  # espeak left silence after the words: the cut below is real
    released = pcm[: end + RATE * 50 // 1000]
    engine = await SpeechEngine.start()
    try:
        listening = engine.listen()
        for start in range(0, len(released), FRAME):
            listening.feed(released[start : start + FRAME])
            await asyncio.sleep(0.02)
        heard = await listening.finish()
        assert heard.text == "what is three plus four", heard
        # The same engine still decodes whole utterances (what a call does when it did not listen).
        assert (await engine.recognize(released)).text == "what is three plus four"
        cancelled = engine.listen()
        cancelled.feed(released[: RATE // 2])
        cancelled.cancel()
        assert (await engine.listen().finish()).text is None  # nothing fed: nothing heard
    finally:
        await engine.close()


@pytest.mark.parametrize("pieces", [1, 7, 50])
def test_loudness_sees_the_quiet_ending_however_the_audio_is_cut(pieces: int) -> None:
    # 0.5 s loud, 0.3 s of -60 dBFS hiss: the end pad shrinks by the 0.3 s already quiet.
    rng = np.random.default_rng(1)
    audio = np.concatenate([rng.standard_normal(RATE // 2) * 3000, rng.standard_normal(RATE * 3 // 10) * 33])
    meter = asr._Loudness(RATE)
    for part in np.array_split(audio.astype(np.int16), pieces):
        meter.push(part)
    assert meter.may_hold_speech
    assert meter.quiet_tail_s == pytest.approx(0.3, abs=0.02)
    meter.push((rng.standard_normal(FRAME) * 3000).astype(np.int16))
    assert meter.quiet_tail_s == 0
    hiss = asr._Loudness(RATE)
    hiss.push(audio[RATE // 2 :].astype(np.int16))
    assert not hiss.may_hold_speech and hiss.quiet_tail_s == pytest.approx(0.3, abs=0.02)
