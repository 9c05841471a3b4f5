"""Offline speech recognition: pocketsphinx restricted to a JSGF grammar of known phrases.

Free-form recognition of synthetic speech is poor; a grammar of what the responder
understands is not (../shared/TESTING.md). A grammar always returns *some* phrase,
so each utterance is decoded twice: against the grammar and against a free phone
loop. Speech that fits a phrase scores nearly as well under the grammar as under the
unconstrained loop; out-of-grammar speech and noise score much worse per frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pocketsphinx

from server.realtime.resample import resample_int16

log = logging.getLogger(__name__)

DECODER_RATE = 16000
# Acoustic score margin (grammar minus phone loop, per speech frame, log base 1.0001)
# above which a phrase is accepted (TESTING.md: −30 accepts nothing bad but drops a
# quarter of the good phrases).
ACCEPT_MARGIN = -35.0
# Digital silence wrecks the model's noise estimate (59 % instead of 96 % right):
# every decode gets a white-noise floor at this level.
_DITHER_DBFS = -50.0
_DITHER_SEED = 0  # fixed: the same audio always decodes the same way
# Below this loudness (peak 20 ms RMS) there is no speech to decode.
_SILENCE_DBFS = -45.0
_MIN_SPEECH_S = 0.2
# Room for the silence model either side of an utterance cut tight by push-to-talk.
_PAD_S = 0.25  # 0.1 s: 13 % less CPU, but loud noise then passed as "bye"
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


def _peak_dbfs(pcm: np.ndarray, window: int) -> float:
    usable = len(pcm) // window * window
    if usable == 0:
        return float("-inf")
    blocks = pcm[:usable].astype(np.float64).reshape(-1, window)
    peak_rms = float(np.sqrt((blocks**2).mean(axis=1)).max())
    return 20 * np.log10(peak_rms / 32768) if peak_rms > 0 else float("-inf")


class Recognizer:
    """Grammar-restricted recognition with out-of-grammar rejection.

    Thread-confined: pocketsphinx decoders are not thread-safe, so create and use a
    Recognizer in one thread (the server gives it a single-thread executor).
    """

    def __init__(self, phrases: Sequence[str]) -> None:
        self._thread = threading.get_ident()
        # The model's feat.params switch on noise removal and set normalisation;
        # keyword arguments for those would be silently overridden, so none are given.
        self._decoder = pocketsphinx.Decoder(
            lm=None,
            bestpath=False,  # the default returned partial phrases and varied between runs
            compallsen=True,  # all senones scored: the two searches' scores are comparable
            # "Final result does not match the grammar" is routine for noise: handled, not logged.
            loglevel="FATAL",
        )
        known = [p for p in dict.fromkeys(phrases) if self._pronounceable(p)]
        if not known:
            raise ValueError("no phrase has every word in the pronunciation dictionary")
        self.phrases: tuple[str, ...] = tuple(known)
        self._decoder.add_jsgf_string(_GRAMMAR, jsgf_grammar(known))
        self._decoder.add_allphone_file(_PHONE_LOOP, None)
        self._log_math = self._decoder.get_logmath()

    def _pronounceable(self, phrase: str) -> bool:
        missing = [w for w in phrase.split() if self._decoder.lookup_word(w) is None]
        if missing:
            log.warning("phrase %r left out of the grammar: %s not in the dictionary", phrase, missing)
        return not missing

    def recognize(self, pcm: np.ndarray, sample_rate: int) -> Recognition:
        """Recognize one utterance of int16 mono audio (blocking, ~0.1-0.3 s for 2 s)."""
        if threading.get_ident() != self._thread:
            raise RuntimeError("Recognizer used from a thread other than the one that created it")
        started = time.perf_counter()
        audio = resample_int16(pcm, sample_rate, DECODER_RATE)
        if len(audio) < _MIN_SPEECH_S * DECODER_RATE or _peak_dbfs(audio, DECODER_RATE // 50) < _SILENCE_DBFS:
            return Recognition(None, False, float("-inf"), _elapsed_ms(started))
        audio = self._dithered(audio)
        text, grammar_score, speech_frames = self._decode(_GRAMMAR, audio)
        if text is None or speech_frames == 0:
            return Recognition(None, False, float("-inf"), _elapsed_ms(started))
        _, loop_score, _ = self._decode(_PHONE_LOOP, audio)
        margin = (grammar_score - loop_score) / speech_frames
        accepted = margin > ACCEPT_MARGIN
        return Recognition(text if accepted else None, accepted, margin, _elapsed_ms(started))

    def _dithered(self, audio: np.ndarray) -> np.ndarray:
        pad = np.zeros(int(_PAD_S * DECODER_RATE))
        signal = np.concatenate([pad, audio.astype(np.float64), pad])
        rng = np.random.default_rng(_DITHER_SEED)
        signal += rng.standard_normal(len(signal)) * (32768 * 10 ** (_DITHER_DBFS / 20))
        return np.clip(signal, -32768, 32767).astype(np.int16)

    def _decode(self, search: str, audio: np.ndarray) -> tuple[str | None, float, int]:
        """(best hypothesis, total acoustic score, frames of non-filler words)."""
        self._decoder.activate_search(search)
        # Fresh noise and normalisation estimates for every decode: carried-over state
        # made the same audio decode differently, and the two searches incomparable.
        self._decoder.reinit_feat()
        self._decoder.start_utt()
        self._decoder.process_raw(audio.tobytes(), full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return None, 0.0, 0  # no path reached the grammar's end (noise, cut-off speech)
        score, speech_frames = 0.0, 0
        for segment in self._decoder.seg():
            score += self._log_math.log(segment.ascore)
            if segment.word not in _FILLERS and not segment.word.startswith("["):
                speech_frames += segment.end_frame - segment.start_frame + 1
        return hyp.hypstr.strip(), score, speech_frames


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
