"""Offline speech recognition: pocketsphinx restricted to a JSGF grammar of known phrases.

Free-form recognition of synthetic speech is poor; a grammar of what the responder
understands is not (../shared/TESTING.md). A grammar always returns *some* phrase,
so each utterance is decoded twice: against the grammar and against a free phone
loop. Speech that fits a phrase scores nearly as well under the grammar as under the
unconstrained loop; out-of-grammar speech and noise score much worse per frame.

Both passes run while the audio arrives (an Utterance fed 20 ms at a time, one
decoder per pass: a decoder runs one search at a time), so at the end of speech only
the tail is left to decode (FACTS.md "Recognising while the key is held").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
import pocketsphinx

log = logging.getLogger(__name__)

DECODER_RATE = 16000
# Acoustic score margin (grammar minus phone loop, per speech frame, log base 1.0001)
# above which a phrase is accepted (TESTING.md: −30 accepts nothing bad but drops a
# quarter of the good phrases).
ACCEPT_MARGIN = -35.0
# Digital silence wrecks the model's noise estimate (59 % instead of 96 % right):
# every decode gets a white-noise floor at this level.
_DITHER_RMS = 32768 * 10 ** (-50.0 / 20)  # -50 dBFS
_DITHER_SEED = 0
# Below this loudness (peak 20 ms RMS) there is no speech to decode.
_SILENCE_DBFS = -45.0
_MIN_SPEECH_S = 0.2
# Room for the silence model either side of an utterance cut tight by push-to-talk.
_PAD_S = 0.25  # 0.1 s: 13 % less CPU, but loud noise then passed as "bye"
# Audio that already ends in that much quiet needs no more after it: the end pad, the
# only decoding left at release, shrinks to this (40/40 phrases and 0/14 noise or
# out-of-grammar accepted, margins unchanged to 0.1, on speech with >= 0.3 s of quiet).
_MIN_END_PAD_S = 0.02
# Audio fed in pieces switches pocketsphinx from batch to live normalisation, which
# starts from this cepstral mean instead of the utterance's own (unknown until its
# end). Its default (40,3,-1,0...) got 31/40 phrases right; this prior, the mean of the
# batch means over 40 synthetic utterances, got 40/40 like batch decoding, OOG 0/10.
CMN_PRIOR = "58.00,-7.24,-1.92,8.01,-5.97,-3.62,-2.74,-9.98,-4.26,-6.18,-0.52,-3.40,-3.17"
_FEED_S = 0.02  # recognize() feeds in 20 ms pieces: process_raw holds the GIL while it runs
_GRAMMAR = "phrases"
_PHONE_LOOP = "phones"
_END = ""  # trie key marking the end of a phrase
_FILLERS = ("<s>", "</s>", "<sil>", "(NULL)", "SIL")


@dataclass(frozen=True)
class Recognition:
    """What one utterance was heard as. `text` is None when nothing (known) was heard."""

    text: str | None
    accepted: bool
    # Acoustic margin per speech frame; −inf when there was nothing to decode.
    score: float
    # Decoding time after the last audio arrived: the tail for an Utterance fed as the
    # audio came, the whole decode for recognize().
    elapsed_ms: float


def jsgf_grammar(phrases: Sequence[str]) -> str:
    """A JSGF grammar whose sentences are exactly `phrases`, as a minimal word graph.

    A flat list of alternatives makes the decoder run one copy of "what" per phrase
    (2.2x slower here); sharing prefixes through a trie and merging identical
    sub-trees ("... plus <zero..ten>") gives the same language with far fewer states.
    """
    trie: dict[str, dict] = {}
    for phrase in phrases:
        node = trie
        for word in phrase.split():
            node = node.setdefault(word, {})
        node[_END] = {}
    rules: dict[str, str] = {}  # rule body → rule name; equal bodies are one rule

    def rule_for(node: dict[str, dict]) -> str | None:
        alternatives = []
        for word in sorted(w for w in node if w != _END):
            child = rule_for(node[word])
            alternatives.append(word if child is None else f"{word} {child}")
        if not alternatives:
            return None
        body = " | ".join(alternatives)
        if _END in node:  # a phrase may stop here
            body = f"[ {body} ]"
        return rules.setdefault(body, f"<w{len(rules)}>")

    top = rule_for(trie)
    lines = ["#JSGF V1.0;", f"grammar {_GRAMMAR};", f"public <{_GRAMMAR}> = {top};"]
    lines += [f"{name} = {body};" for body, name in rules.items()]
    return "\n".join(lines) + "\n"


class _Loudness:
    """Length, peak 20 ms RMS and quiet ending of audio seen piece by piece."""

    def __init__(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self._window = sample_rate // 50
        self._carry = np.zeros(0, dtype=np.float64)  # the part of a window not yet complete
        self._samples = 0
        self._peak_power = 0.0
        self._quiet_tail = 0  # samples since the last window loud enough to be speech
        self._gate_power = (32768 * 10 ** (_SILENCE_DBFS / 20)) ** 2

    def push(self, pcm: np.ndarray) -> None:
        self._samples += len(pcm)
        audio = np.concatenate([self._carry, pcm.astype(np.float64)])
        usable = len(audio) // self._window * self._window
        if usable:
            powers = (audio[:usable].reshape(-1, self._window) ** 2).mean(axis=1)
            self._peak_power = max(self._peak_power, float(powers.max()))
            loud = np.flatnonzero(powers >= self._gate_power)
            self._quiet_tail = self._quiet_tail + usable if len(loud) == 0 else \
                (len(powers) - 1 - int(loud[-1])) * self._window
        self._carry = audio[usable:]

    @property
    def may_hold_speech(self) -> bool:
        return self._samples >= _MIN_SPEECH_S * self._rate and self._peak_power >= self._gate_power

    @property
    def quiet_tail_s(self) -> float:
        return self._quiet_tail / self._rate


class _Resampler:
    """One persistent libswresample resampler: per-frame output is byte-identical to one-shot."""

    def __init__(self, from_rate: int) -> None:
        self._from_rate = from_rate
        self._resampler = None if from_rate == DECODER_RATE else \
            av.AudioResampler(format="s16", layout="mono", rate=DECODER_RATE)

    def push(self, pcm: np.ndarray | None) -> np.ndarray:
        """Resampled audio so far; None flushes what the filter still holds."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16) if pcm is None else pcm
        frame = None
        if pcm is not None:
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self._from_rate
        chunks = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


@dataclass
class _Decoders:
    """One decoder per pass: a decoder runs one search at a time."""

    grammar: pocketsphinx.Decoder
    phones: pocketsphinx.Decoder

    def both(self) -> tuple[pocketsphinx.Decoder, pocketsphinx.Decoder]:
        return self.grammar, self.phones


class Utterance:
    """One utterance, recognised as it arrives: feed() its audio, then finish().

    Confined to the recognizer's thread like the Recognizer itself.
    """

    def __init__(self, recognizer: Recognizer, decoders: _Decoders, sample_rate: int) -> None:
        self._recognizer = recognizer
        self._decoders: _Decoders | None = decoders
        self._resampler = _Resampler(sample_rate)
        self._loudness = _Loudness(sample_rate)
        self._dither = np.random.default_rng(_DITHER_SEED)  # fixed: the same audio always decodes the same way
        for decoder in decoders.both():
            # Fresh noise and normalisation estimates for every utterance: carried-over state
            # made the same audio decode differently, and the two searches incomparable.
            decoder.reinit_feat()
            decoder.set_cmn(CMN_PRIOR)
            decoder.start_utt()
        # The lead pad first: the first block after start_utt must hold >= 410 samples.
        self._decode(np.zeros(int(_PAD_S * DECODER_RATE), dtype=np.int16))

    def feed(self, pcm: np.ndarray) -> None:
        """More int16 mono audio at the utterance's sample rate (any length)."""
        self._recognizer.check_thread()
        samples = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
        self._loudness.push(samples)
        self._decode(self._resampler.push(samples))

    def finish(self) -> Recognition:
        """The end of the utterance: decode the tail, compare the passes. Frees the decoders."""
        self._recognizer.check_thread()
        started = time.perf_counter()
        self._decode(self._resampler.push(None))
        end_pad_s = max(_MIN_END_PAD_S, _PAD_S - self._loudness.quiet_tail_s)
        self._decode(np.zeros(int(end_pad_s * DECODER_RATE), dtype=np.int16))
        decoders = self._end()
        try:
            text, grammar_score, speech_frames = self._recognizer.result(decoders.grammar)
            _, loop_score, _ = self._recognizer.result(decoders.phones)
        finally:
            self._recognizer.release(decoders)
        if not self._loudness.may_hold_speech or text is None or speech_frames == 0:
            return Recognition(None, False, float("-inf"), _elapsed_ms(started))
        margin = (grammar_score - loop_score) / speech_frames
        accepted = margin > ACCEPT_MARGIN
        return Recognition(text if accepted else None, accepted, margin, _elapsed_ms(started))

    def cancel(self) -> None:
        """Abandon the utterance (its audio was cleared); frees the decoders."""
        self._recognizer.check_thread()
        if self._decoders is not None:
            self._recognizer.release(self._end())

    def _decode(self, audio: np.ndarray) -> None:
        if self._decoders is None:
            raise RuntimeError("this utterance has already ended")
        if len(audio) == 0:
            return  # process_raw(b"") raises
        # A white-noise floor under everything: digital silence wrecks the noise estimate.
        signal = audio.astype(np.float64) + self._dither.standard_normal(len(audio)) * _DITHER_RMS
        block = np.clip(signal, -32768, 32767).astype(np.int16).tobytes()
        for decoder in self._decoders.both():
            decoder.process_raw(block, False, False)

    def _end(self) -> _Decoders:
        decoders, self._decoders = self._decoders, None
        assert decoders is not None
        for decoder in decoders.both():
            decoder.end_utt()  # if this raises, the pair is dropped here, never reused
        return decoders


class Recognizer:
    """Grammar-restricted recognition with out-of-grammar rejection.

    Thread-confined: pocketsphinx decoders are not thread-safe, so create and use a
    Recognizer (and its Utterances) in one thread (the server gives it a single-thread
    executor). Each utterance in progress holds a pair of decoders (~66 MiB); one idle
    pair is kept, more are made only while several calls speak at once.
    """

    def __init__(self, phrases: Sequence[str]) -> None:
        self._thread = threading.get_ident()
        first = self._new_decoder()
        known = [p for p in dict.fromkeys(phrases) if self._pronounceable(first, p)]
        if not known:
            raise ValueError("no phrase has every word in the pronunciation dictionary")
        self.phrases: tuple[str, ...] = tuple(known)
        self._grammar = jsgf_grammar(known)
        self._log_math = first.get_logmath()
        self._idle: list[_Decoders] = [self._new_decoders(first)]

    @staticmethod
    def _new_decoder() -> pocketsphinx.Decoder:
        # The model's feat.params switch on noise removal and set normalisation;
        # keyword arguments for those would be silently overridden, so none are given.
        return pocketsphinx.Decoder(
            lm=None,
            bestpath=False,  # the default returned partial phrases and varied between runs
            compallsen=True,  # all senones scored: the two searches' scores are comparable
            # "Final result does not match the grammar" is routine for noise: handled, not logged.
            loglevel="FATAL",
        )

    def _new_decoders(self, grammar: pocketsphinx.Decoder | None = None) -> _Decoders:
        grammar = grammar or self._new_decoder()
        grammar.add_jsgf_string(_GRAMMAR, self._grammar)
        grammar.activate_search(_GRAMMAR)
        phones = self._new_decoder()
        phones.add_allphone_file(_PHONE_LOOP, None)
        phones.activate_search(_PHONE_LOOP)
        return _Decoders(grammar, phones)

    @staticmethod
    def _pronounceable(decoder: pocketsphinx.Decoder, phrase: str) -> bool:
        missing = [w for w in phrase.split() if decoder.lookup_word(w) is None]
        if missing:
            log.warning("phrase %r left out of the grammar: %s not in the dictionary", phrase, missing)
        return not missing

    def check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError("Recognizer used from a thread other than the one that created it")

    def begin(self, sample_rate: int) -> Utterance:
        """Start recognising an utterance of int16 mono audio at `sample_rate` as it arrives."""
        self.check_thread()
        decoders = self._idle.pop() if self._idle else self._new_decoders()
        return Utterance(self, decoders, sample_rate)

    def recognize(self, pcm: np.ndarray, sample_rate: int) -> Recognition:
        """Recognize a whole utterance of int16 mono audio (blocking, ~0.1-0.3 s for 2 s)."""
        self.check_thread()
        started = time.perf_counter()
        loudness = _Loudness(sample_rate)
        loudness.push(pcm)
        if not loudness.may_hold_speech:  # nothing to decode: skip the decode
            return Recognition(None, False, float("-inf"), _elapsed_ms(started))
        utterance = self.begin(sample_rate)
        piece = int(_FEED_S * sample_rate)
        for start in range(0, len(pcm), piece):
            utterance.feed(pcm[start : start + piece])
        heard = utterance.finish()
        return Recognition(heard.text, heard.accepted, heard.score, _elapsed_ms(started))

    def release(self, decoders: _Decoders) -> None:
        """An utterance is over: keep one idle pair of decoders, let the rest go."""
        if not self._idle:
            self._idle.append(decoders)

    def result(self, decoder: pocketsphinx.Decoder) -> tuple[str | None, float, int]:
        """(best hypothesis, total acoustic score, frames of non-filler words) of an ended utterance."""
        hyp = decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return None, 0.0, 0  # no path reached the grammar's end (noise, cut-off speech)
        score, speech_frames = 0.0, 0
        for segment in decoder.seg():
            score += self._log_math.log(segment.ascore)
            if segment.word not in _FILLERS and not segment.word.startswith("["):
                speech_frames += segment.end_frame - segment.start_frame + 1
        return hyp.hypstr.strip(), score, speech_frames


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
