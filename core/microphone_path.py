"""Each microphone frame on its way to the call: Sandra's own voice cancelled, the user's watched.

The far end is what the playout stage hands the speaker, with the time it sounds
(PortAudio's DAC time); the near end is each 20 ms microphone frame with the time it
was heard (the ADC time). Both meet in one EchoCanceller, processed on one thread (the
one that reads frames for the outgoing track). While an answer is audible in
hands-free, VoiceBargeIn decides from the cleaned frames whether the user speaks over
it; Sandra's echo alone must never trip it. Off, frames pass untouched at no cost.

The canceller leaves a residue, and for a second or two after the echo path changes
(a glitch in the sound server, the laptop moved) it lets the echo through almost
whole: enough for a server's VAD to hear Sandra and answer herself. So while she is
audible, and for ECHO_TAIL_S after, the frames sent are a faint comfort noise unless
the barge-in decider has heard the user: residual echo suppression, as WebRTC's own
pipeline ends with. The decider is sure 0.1-0.4 s into the user's words; the cleaned
frames of the last PRE_ROLL_S are kept meanwhile and sent at once when it fires, so
the server hears the question from its first word, not from where the decider was sure.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from base.pcm import FRAME_SAMPLES, FRAME_SECONDS, RATE
from core.config import Settings
from core.echo_canceller import EchoCanceller, EchoSettings
from core.playout import Playout
from core.voice_barge_in import VoiceBargeIn

log = logging.getLogger(__name__)

# After the last loud sample reaches the speaker, its echo can still be coming in: the room
# rings, and the way back through the sound server adds its own buffering (~70 ms on the rig).
ECHO_TAIL_S = 0.5
LOUD = 100  # int16 peak (-50 dBFS): quieter output makes no echo a VAD could hear
ECHO_PRESENT_DBFS = -45.0  # a frame this loud while only Sandra speaks holds her echo
COMFORT_NOISE_DBFS = -60.0  # not digital silence: recognisers and VADs misjudge exact zeros
# the decider fires 0.1-0.4 s after the user's first word (double-talk on the rig: up to ~0.4 s)
PRE_ROLL_S = 0.4


class MicrophonePath:
    def __init__(self, playout: Playout, on_voice: Callable[[], None]) -> None:
        self._playout = playout
        self._on_voice = on_voice
        self._echo: EchoCanceller | None = None
        self._barge_in: VoiceBargeIn | None = None
        self._echo_until = 0.0  # frames heard before this may hold Sandra's voice (monotonic)
        self._user_over_answer = False  # the decider heard the user: let the microphone through
        # cleaned frames sent as comfort noise while the decider listened, the latest PRE_ROLL_S
        self._withheld: deque[np.ndarray] = deque(maxlen=round(PRE_ROLL_S / FRAME_SECONDS))
        self._backlog: deque[np.ndarray] = deque()  # to send before any frame heard after them
        # Echo return loss enhancement on frames that held Sandra's echo and nobody else.
        self._erle_sum = 0.0
        self._erle_frames = 0
        self._comfort = (np.random.default_rng(0).standard_normal(FRAME_SAMPLES * 50)
                         * 32768 * 10 ** (COMFORT_NOISE_DBFS / 20)).astype(np.int16)

    def configure(self, settings: Settings, hands_free: bool) -> None:
        """What the settings ask for in this mode: in hands-free the microphone is open while
        Sandra speaks, so her voice is cancelled and the user's is listened for; push-to-talk
        needs it only when asked (Sandra is quiet while the button is held)."""
        wanted = settings.echo_cancellation or settings.noise_suppression
        echo = EchoSettings(echo_cancellation=settings.echo_cancellation, noise_suppression=settings.noise_suppression)
        self._echo = EchoCanceller(echo) if wanted and (hands_free or settings.echo_in_push_to_talk) else None
        self._playout.on_played = self._played if self._echo is not None else None
        self._barge_in = VoiceBargeIn() if hands_free and self._echo is not None else None
        self._withheld.clear()
        self._backlog.clear()
        log.info("microphone path: %s, voice barge-in %s", echo if self._echo else "untouched",
                 "on" if self._barge_in else "off")

    @property
    def echo_reduction_db(self) -> float | None:
        """How much of Sandra's echo the canceller took out, on average (None: no echo seen yet)."""
        return self._erle_sum / self._erle_frames if self._erle_frames else None

    @property
    def held_back(self) -> bool:
        """Frames wait to be sent now (the user's first words over an answer), ahead of the clock."""
        return bool(self._backlog)

    def _played(self, samples: np.ndarray, dac_time: float) -> None:
        """The speaker's thread: the far end for the canceller, and until when an echo may come."""
        echo = self._echo
        if echo is None:
            return
        echo.push_far(samples, dac_time)
        if self._barge_in is not None and len(samples) and int(np.abs(samples).max()) > LOUD:
            self._echo_until = dac_time + len(samples) / RATE + ECHO_TAIL_S  # one float: safe across threads

    def process(self, timed: tuple[float | None, np.ndarray] | None) -> np.ndarray | None:
        """The frame to send for a (heard-at, frame) pair from the microphone."""
        if timed is None:
            return self._backlog.popleft() if self._backlog else None
        heard_at, frame = timed
        echo = self._echo
        if echo is None or heard_at is None:  # off, or a file: nothing to cancel against
            return frame
        cleaned = echo.process(frame, heard_at)
        if self._barge_in is None:
            return cleaned
        sandra_audible = heard_at < self._echo_until  # her voice (not the silence a server streams) is out
        if self._barge_in.update(heard_at, echo.speech_probability, echo.mic_dbfs, echo.cleaned_dbfs,  # device clock
                                 sandra_audible, echo.reference_steady_s):
            self._user_over_answer = True
            self._backlog.extend(self._withheld)
            self._withheld.clear()
            self._on_voice()
        if not sandra_audible:
            self._user_over_answer = False
            self._withheld.clear()
        elif not self._user_over_answer:
            if echo.mic_dbfs > ECHO_PRESENT_DBFS:
                self._erle_sum += echo.mic_dbfs - max(echo.cleaned_dbfs, -120.0)
                self._erle_frames += 1
            self._withheld.append(cleaned)
            start = int(heard_at * RATE) % (len(self._comfort) - FRAME_SAMPLES)
            return self._comfort[start:start + FRAME_SAMPLES]
        if self._backlog:
            self._backlog.append(cleaned)
            return self._backlog.popleft()
        return cleaned
