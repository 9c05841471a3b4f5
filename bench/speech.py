"""Offline speech benchmark: recognition accuracy and time per turn, synthesis time.

Utterances are the responder's own grammar phrases spoken by libespeak-ng (the same
engine as the espeak-ng command line) with the en-us and en voices at 130-170 words
a minute, at 48 kHz as WebRTC delivers them. Out-of-grammar sentences and noise
measure how often the recognizer accepts what it should not.

    python -m bench.speech [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time

import numpy as np

from bench.figures import figure, print_table
from server.realtime.asr import Recognizer
from server.realtime.responder import Responder
from server.realtime.tts import OUTPUT_RATE, Synthesizer

log = logging.getLogger(__name__)

VOICES = ("en-us", "en")
SPEEDS = (130, 140, 150, 160, 170)
BATCH = 20  # utterances per accuracy figure: min/max show the spread between batches
OUT_OF_GRAMMAR = (
    "the weather in paris tomorrow", "play some music please", "how tall is mount everest",
    "turn off the lights", "what is the capital of france", "i would like a pizza", "open the door",
    "call my mother", "what is twelve plus nineteen", "tell me a joke", "set an alarm for seven",
    "what is the meaning of life",
)


def _speak(synthesizers: dict[tuple[str, int], Synthesizer], text: str, rng: random.Random) -> np.ndarray:
    return synthesizers[(rng.choice(VOICES), rng.choice(SPEEDS))].synthesize_blocking(text)


def run(quick: bool = False) -> dict[str, dict[str, float]]:
    """Speech figures as {"value": median, "min", "max", "runs"}; `quick` uses 40 utterances, not 100."""
    rng = random.Random(2024)
    responder = Responder()
    count = 40 if quick else 100
    phrases = rng.sample(responder.phrases, count - 1) + ["what time is it"]
    synthesizers = {(voice, speed): Synthesizer(voice, speed) for voice in VOICES for speed in SPEEDS}
    try:
        started = time.perf_counter()
        recognizer = Recognizer(responder.phrases)
        init_ms = (time.perf_counter() - started) * 1000
        recognizer.recognize(_speak(synthesizers, "hello", rng), OUTPUT_RATE)  # lazy loading out of the figures

        right, wrong, asr_ms, ms_per_audio_s = [], [], [], []
        for first in range(0, count, BATCH):
            batch = phrases[first:first + BATCH]
            results = []
            for phrase in batch:
                pcm = _speak(synthesizers, phrase, rng)
                heard = recognizer.recognize(pcm, OUTPUT_RATE)
                results.append(heard)
                asr_ms.append(heard.elapsed_ms)
                ms_per_audio_s.append(heard.elapsed_ms / (len(pcm) / OUTPUT_RATE))
                if heard.text != phrase:
                    log.info("%r heard as %r (score %.1f)", phrase, heard.text, heard.score)
            right.append(100 * sum(r.text == p for r, p in zip(results, batch)) / len(batch))
            wrong.append(100 * sum(r.accepted and r.text != p for r, p in zip(results, batch)) / len(batch))

        impostors = [_speak(synthesizers, text, rng) for text in OUT_OF_GRAMMAR]
        impostors += [(np.random.default_rng(n).standard_normal(OUTPUT_RATE * 2) * 3000).astype(np.int16)
                      for n in range(3)]
        accepted = []
        for index, pcm in enumerate(impostors):
            heard = recognizer.recognize(pcm, OUTPUT_RATE)
            accepted.append(heard.accepted)
            if heard.accepted:
                what = OUT_OF_GRAMMAR[index] if index < len(OUT_OF_GRAMMAR) else "noise"
                log.info("impostor %r accepted as %r (score %.1f)", what, heard.text, heard.score)

        default = synthesizers[("en-us", 160)]
        tts_ms = []
        for phrase in phrases[:BATCH]:
            started = time.perf_counter()
            default.synthesize_blocking(responder.answer(phrase, []).spoken)
            tts_ms.append((time.perf_counter() - started) * 1000)
    finally:
        for synthesizer in synthesizers.values():
            synthesizer.close()
    return {
        "asr_accuracy_pct": figure(right),
        "asr_wrong_accept_pct": figure(wrong),
        "asr_out_of_grammar_accept_pct": figure([100 * sum(accepted) / len(accepted)]),
        "asr_ms": figure(asr_ms),
        "asr_ms_per_audio_s": figure(ms_per_audio_s),
        "asr_init_ms": figure([init_ms]),
        "tts_ms": figure(tts_ms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speech", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 utterances instead of 100")
    parser.add_argument("--json", action="store_true", help="last line: the figures as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every misrecognition")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    figures = run(args.quick)
    print_table(figures, sys.stdout)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
