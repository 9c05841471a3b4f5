"""Barge-in by voice: is the user speaking over the assistant? Pure; time passed in.

Speech probability after echo cancellation alone cannot tell: the residual echo still
looks like speech to it (7-33 % of echo-only frames above 0.5, in runs up to 1 s on
the synthetic rooms of tests/test_voice_barge_in.py), so a hold-off long enough to
ignore it is far slower than 300 ms. What the echo cannot fake is energy: the
canceller takes 20-40 dB off the echo, but a voice the canceller does not know passes
through it almost untouched. A frame counts as the user's voice when the speech
probability says speech AND the cleaned frame kept most of the microphone's energy
AND it stands above the room's noise floor: in full when the canceller took under 3 dB
from it, half up to 10. Such frames fill an accumulator (leaking at half speed in
between, so the pauses between words do not reset it); full, it fires, once per
stretch of the assistant being audible.

After the far reference was torn (an underrun, a lost block) the canceller may let echo
through while it relearns the echo path, so no frame counts as voice until it has shown
that it cancels again: `proof_s` of the assistant's loud echo frames each taken down by
`proof_db` or more, with no loud frame left untouched in between; failing that, until
the reference has been steady for `steady_for_s`. On the rig AEC3 mostly kept
cancelling across a tear (the proof came 0.4-0.6 s after it), and waiting 3 s every
time missed a user who spoke in that window.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from base.pcm import FRAME_SECONDS

log = logging.getLogger(__name__)

DIGITAL_SILENCE_DBFS = -100.0


@dataclass(frozen=True)
class BargeInSettings:
    # the noise suppressor's probability rises over a few frames at a word's onset (0.45 on the
    # rig's first loud frame of a question); the energy tests below carry the decision
    min_probability: float = 0.4
    # the cleaned frame within this many dB of the raw microphone: the canceller found no echo to take
    max_cancelled_db: float = 10.0
    above_floor_db: float = 10.0  # the cleaned frame this much above the microphone's noise floor
    # A voice the canceller does not know mostly loses less than this; the echo it let through
    # after a pause in the answer (the only echo that ever fired on the rig: twice in 68 runs
    # of the long-answer test) lost 2-10 dB a frame. Between this and max_cancelled_db a frame
    # counts half.
    full_weight_db: float = 3.0
    # of net evidence: over those 68 runs echo alone reached 0.05 s (0.02 in the synthetic rooms)
    fire_after_s: float = 0.060
    leak: float = 0.5  # evidence a non-voice frame takes away, relative to what a voice frame adds
    floor_rise_db_per_s: float = 2.5  # the floor follows a quieter room at once, a louder one slowly
    # after the far reference was torn AEC3 may let echo through while it relearns (1-3 s on
    # the rig): no voice until it proves it cancels again, or until this long after the tear
    steady_for_s: float = 3.0
    proof_s: float = 0.4  # of loud echo frames, each cancelled by proof_db or more
    proof_db: float = 20.0


class VoiceBargeIn:
    """Feed every processed microphone frame to ``update``; True once when the user barges in."""

    def __init__(self, settings: BargeInSettings = BargeInSettings()) -> None:
        self.settings = settings
        self._floor_db: float | None = None
        self._evidence = 0.0
        self._last: float | None = None
        self._fired = False
        self._steady_s = math.inf  # the last reference_steady_s: smaller now means a new tear
        self._proof = math.inf  # cancelling echo since the last tear, in seconds of loud frames

    @property
    def evidence_s(self) -> float:
        return self._evidence

    def update(self, now: float, probability: float, mic_dbfs: float, cleaned_dbfs: float,
               assistant_audible: bool, reference_steady_s: float = math.inf) -> bool:
        """One 20 ms frame: its speech probability, the microphone's level before and after
        cleaning, and how long the canceller's far reference has been steady
        (EchoCanceller.reference_steady_s)."""
        s = self.settings
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        mic = mic_dbfs if math.isfinite(mic_dbfs) else -120.0
        cleaned = cleaned_dbfs if math.isfinite(cleaned_dbfs) else -120.0
        if mic > DIGITAL_SILENCE_DBFS:  # a stream's first blocks are often zeros: no floor there
            if self._floor_db is None or mic < self._floor_db:
                self._floor_db = mic
            else:
                self._floor_db += s.floor_rise_db_per_s * dt
        if reference_steady_s < self._steady_s or reference_steady_s <= 0.0:
            self._proof = 0.0
        self._steady_s = reference_steady_s
        if not assistant_audible:
            self._evidence = 0.0
            self._fired = False  # re-armed for the next answer
            return False
        loud = self._floor_db is not None and mic >= self._floor_db + s.above_floor_db
        untouched = cleaned >= mic - s.max_cancelled_db
        if loud and self._proof < s.proof_s - 1e-9:
            if untouched:  # the user's voice or leaking echo: start over
                self._proof = 0.0
            elif cleaned <= mic - s.proof_db:
                self._proof += FRAME_SECONDS
        trusted = reference_steady_s >= s.steady_for_s or self._proof >= s.proof_s - 1e-9
        voice = (trusted and self._floor_db is not None and probability >= s.min_probability
                 and untouched and cleaned >= self._floor_db + s.above_floor_db)
        # evidence counts frames (every update is one), so a late call cannot jump it
        if voice:
            self._evidence += FRAME_SECONDS if cleaned >= mic - s.full_weight_db else FRAME_SECONDS / 2
        else:
            self._evidence = max(0.0, self._evidence - s.leak * FRAME_SECONDS)
        if self._fired or self._evidence < s.fire_after_s - 1e-9:
            return False
        self._fired = True
        # the deciding frame's figures: what to look at when echo alone ever gets through
        log.info("voice barge-in: the user speaks over the assistant (speech %.2f, microphone %.1f dBFS, "
                 "cleaned %.1f, floor %.1f, reference steady %.1f s, cancelling since the tear %.1f s)",
                 probability, mic, cleaned, self._floor_db if self._floor_db is not None else -120.0,
                 min(reference_steady_s, 999.0), min(self._proof, 999.0))
        return True
