"""Echo cancellation and noise suppression on the microphone path (WebRTC's AEC3 and NS).

In hands-free the microphone stays open while the answer plays: without this the
assistant hears her own voice and answers it. The far-end reference is exactly what
the playout stage hands to the speaker; PortAudio says when each block sounds (the
output callback's DAC time) and when each microphone block was captured (the input
callback's ADC time). ``FarEndQueue`` lays the far samples out on that shared clock
and hands each microphone frame the far samples that sounded at its capture time
(plus a small lead), so the canceller sees a steady, causal reference whatever the
two callbacks' order, jitter, missed or repeated blocks. AEC3 then finds the acoustic
delay itself (the room, the loudspeaker); the lead is its delay hint.

Threads: ``push_far`` may be called from any thread (PortAudio's output thread in the
app): a lock-protected copy. ``process`` must always be called from ONE thread (the
input callback's), since the WebRTC processor is not thread-safe.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
from pywebrtc_audio import AudioProcessor, VoiceDetector

from base.pcm import FRAME_SAMPLES, RATE, level_dbfs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EchoSettings:
    echo_cancellation: bool = True
    noise_suppression: bool = True
    # Far samples are taken from this long after the near frame's capture time: room for
    # timestamp jitter so that the reference never comes after its echo (AEC3 cannot
    # cancel an echo that precedes its reference). The output latency keeps that much
    # far audio already pushed when the input callback runs.
    lead_ms: int = 10
    ns_level: int = 1  # 0-3: 6, 12, 18, 21 dB of suppression

    @property
    def enabled(self) -> bool:
        return self.echo_cancellation or self.noise_suppression


@dataclass(frozen=True)
class PairingStats:
    """Counters in samples, except the re-anchorings."""

    pulled: int  # far samples handed to the canceller (real or silence)
    missing: int  # of those, nothing was pushed for their time: silence
    late: int  # pushed after their time had already been pulled: unused
    push_jumps: int  # far blocks not contiguous with the previous one (gap, repeat, drift)
    pull_jumps: int  # near frames not contiguous with the previous one


class _Timeline:
    """Where each next block of a stream lies, in samples: end to end with the previous one,
    slewed slowly towards what the timestamps say, unless they say a whole frame or more was
    lost, skipped or repeated.

    Every jump in the far reference, or in how it lines up with the microphone, is an
    echo-path change that AEC3 takes a second or more to relearn (measured on the rig:
    ERLE from 30 down to 10-17 dB for 2 s after an 8 ms shift). PortAudio's stamps over
    PulseAudio wander in a ~2 ms/s sawtooth, 8-12 ms off for seconds, while the devices'
    clocks also drift apart for real (200-500 ppm on the rig): re-anchoring on such a shift
    misaligned the reference by 8 ms at once (in every failed hands-free run under load),
    and counting samples alone let the two streams drift apart over a long call. So the
    stamps are followed as a drift is, a sample at a time: the error is low-passed over
    `tau_s` and the timeline moves by at most `max_slew` (a fraction of real time). A jump
    of a whole frame or more is believed at once; forward by whole blocks within `snap`
    (the capture ring shed a frame) it is a skip, placed on the block grid."""

    def __init__(self, snap: int, tau_s: float = 2.0, max_slew: float = 1e-3) -> None:
        self._snap = snap
        self._tau = tau_s * RATE  # in samples
        self._max_slew = max_slew
        self._pos = 0.0  # exact end, slewed
        self._error = 0.0  # low-passed stamps minus timeline, in samples
        self.end: Optional[int] = None
        self.jumps = 0
        self.skipped_whole = 0  # of the jumps, those forward by whole blocks

    def place(self, start: int, n: int) -> int:
        if self.end is not None:
            off = start - self._pos
            if abs(off) < FRAME_SAMPLES:
                self._error += (off - self._error) * min(1.0, n / self._tau)
                limit = n * self._max_slew
                slew = max(-limit, min(limit, self._error))
                self._error -= slew
                start = round(self._pos + slew)
                self._pos += slew + n
                self.end = start + n
                return start
            whole = round((start - self.end) / n) * n
            if whole > 0 and abs(start - self.end - whole) <= self._snap:
                start, self.skipped_whole = self.end + whole, self.skipped_whole + 1
            self.jumps += 1
        self._pos, self._error = float(start + n), 0.0
        self.end = start + n
        return start


class FarEndQueue:
    """Far-end samples on the DAC clock, read back by microphone capture time. Pure, not thread-safe.

    A ring of ``capacity_s`` of samples, each slot tagged with the absolute sample
    position (time × RATE) it holds, so a slot that was never written (or was written
    for another time) reads as silence. Pushed blocks and pulled frames each follow a
    ``_Timeline``: jitter and wander never tear the reference. A duplicate block lands on the
    same positions again: harmless.
    """

    def __init__(self, *, capacity_s: float = 1.0, lead_s: float = 0.010, snap_s: float = 0.008) -> None:
        self._capacity = int(capacity_s * RATE)
        self._lead = round(lead_s * RATE)
        self._ring = np.zeros(self._capacity, dtype=np.int16)
        self._tag = np.full(self._capacity, -1, dtype=np.int64)
        self._pushes = _Timeline(round(snap_s * RATE))
        self._pulls = _Timeline(round(snap_s * RATE))
        self._pulled = self._missing = self._late = 0
        self._torn_seen = 0
        # capture time of the last frame whose reference was disturbed: far missing, or a jump
        # in either timeline. Not whole near frames skipped (the capture ring shed them): their
        # far frames are skipped with them, the pairing holds, and on the rig AEC3's
        # cancellation did not move across one.
        self.disturbed_at = -math.inf

    def push(self, samples: np.ndarray, dac_time: float) -> None:
        """Store int16 samples that start sounding at dac_time (seconds, PortAudio's clock)."""
        n = len(samples)
        previous_end = self._pushes.end
        start = self._pushes.place(round(dac_time * RATE), n)
        if previous_end is not None and 0 < start - previous_end < FRAME_SAMPLES:
            # the timeline slewed a sample forward: that sample repeats rather than reading as missing
            samples = np.concatenate([np.full(start - previous_end, samples[0] if n else 0, np.int16), samples])
            start, n = previous_end, len(samples)
        if n > self._capacity:  # only the newest capacity can ever be read
            samples, start, n = samples[n - self._capacity:], start + n - self._capacity, self._capacity
        read_end = self._pulls.end
        if read_end is not None and start < read_end:
            behind = min(n, read_end - start)  # its time was already read: no use now
            self._late += behind
            samples, start, n = samples[behind:], start + behind, n - behind
        if not n:
            return
        index = np.arange(start, start + n) % self._capacity
        self._ring[index] = samples
        self._tag[index] = np.arange(start, start + n)

    def pull(self, adc_time: float, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The FRAME_SAMPLES far samples matching a near frame captured at adc_time."""
        if out is None:
            out = np.empty(FRAME_SAMPLES, dtype=np.int16)
        start = self._pulls.place(round(adc_time * RATE) + self._lead, FRAME_SAMPLES)
        positions = np.arange(start, start + FRAME_SAMPLES)
        index = positions % self._capacity
        held = self._tag[index] == positions
        np.copyto(out, np.where(held, self._ring[index], 0))
        missing = FRAME_SAMPLES - int(np.count_nonzero(held))
        self._pulled += FRAME_SAMPLES
        self._missing += missing
        torn = self._pushes.jumps + self._pulls.jumps - self._pulls.skipped_whole
        if missing or torn != self._torn_seen:
            self.disturbed_at = adc_time
            self._torn_seen = torn
        return out

    def stats(self) -> PairingStats:
        return PairingStats(pulled=self._pulled, missing=self._missing, late=self._late,
                            push_jumps=self._pushes.jumps, pull_jumps=self._pulls.jumps)


class EchoCanceller:
    """WebRTC's processor on the microphone path, fed the far end by time.

    Off (both settings false) it is a pass-through that touches nothing. The settings
    are fixed per instance: to change them, build a new one and swap the reference
    (the next frame on the processing thread picks it up).
    """

    def __init__(self, settings: EchoSettings = EchoSettings()) -> None:
        self.settings = settings
        self._lock = threading.Lock()  # push_far (any thread) against process (one thread)
        self._far = FarEndQueue(lead_s=settings.lead_ms / 1000)
        self._far_frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        # +-1 LSB (-90 dBFS, inaudible): what the processor gets instead of exact digital silence
        # (two patterns, so the far end's never looks like an echo of the near end's)
        self._near_dither, self._far_dither = (rng.integers(-1, 2, FRAME_SAMPLES).astype(np.int16)
                                               for rng in (np.random.default_rng(0), np.random.default_rng(1)))
        self._processor: Optional[AudioProcessor] = None
        self._voice: Optional[VoiceDetector] = None
        # of the last processed frame, for barge-in by voice (core/voice_barge_in.py)
        self.speech_probability = 0.0
        self.mic_dbfs = self.cleaned_dbfs = -math.inf
        # since the far reference was last torn (an underrun, a lost block): AEC3 relearns
        # the echo path for 1-3 s after, and lets echo through meanwhile
        self.reference_steady_s = math.inf
        if settings.enabled:
            self._processor = AudioProcessor(
                sample_rate=RATE, num_channels=1, echo_cancellation=settings.echo_cancellation,
                noise_suppression=settings.noise_suppression, high_pass_filter=True,
                auto_gain_control=False, ns_level=settings.ns_level,
                stream_delay_ms=settings.lead_ms if settings.echo_cancellation else 0,
            )
            # The processor's own speech probability comes from its noise suppressor;
            # without it, a detector of the same kind looks at the cleaned frame.
            self._voice = None if settings.noise_suppression else VoiceDetector(sample_rate=RATE)

    def push_far(self, samples: np.ndarray, dac_time: float) -> None:
        """What the speaker is handed, and when its first sample sounds (any thread; a copy)."""
        if self.settings.echo_cancellation:
            with self._lock:
                self._far.push(samples, dac_time)

    def process(self, near: np.ndarray, adc_time: float) -> np.ndarray:
        """The cleaned 20 ms frame for a microphone frame captured at adc_time (one thread only).

        Off, near itself comes back (copy it if its buffer is reused, as PortAudio's is)."""
        if self._processor is None:
            return near
        # Exact zeros after sound (a muted or idle microphone; Sandra done speaking) let the
        # processor's filter states decay into denormal floats: 5-10x its CPU (2-4 ms a
        # frame) for as long as the silence lasts. Real microphones always hiss; so does this.
        heard = near
        if not near.any():
            near = self._near_dither
        far = None
        if self.settings.echo_cancellation:
            with self._lock:
                far = self._far.pull(adc_time, self._far_frame)
                if not far.any():
                    far = self._far_dither
                self.reference_steady_s = adc_time - self._far.disturbed_at
        cleaned = self._processor.process(near, far)
        if self._voice is None:
            self.speech_probability = float(self._processor.speech_probability)
        else:
            self.speech_probability = float(self._voice.process(cleaned))
        self.mic_dbfs, self.cleaned_dbfs = level_dbfs(heard), level_dbfs(cleaned)
        return cleaned

    def pairing(self) -> PairingStats:
        with self._lock:
            return self._far.stats()
