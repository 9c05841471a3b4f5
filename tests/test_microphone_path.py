"""The microphone path hands-free, on the real WebRTC processor in a synthetic room:
while Sandra speaks her echo goes out as comfort noise, and once the barge-in decider
is sure the user speaks over her, the words it listened to before it was sure are sent
after all, ahead of the rest, so the question reaches the server from its first word."""

from __future__ import annotations

import numpy as np
from test_echo_canceller import make_scene, run_canceller, speech  # noqa: F401 - a fixture
from test_voice_barge_in import ONSET_DBFS

from base.pcm import FRAME_SAMPLES, FRAME_SECONDS, level_dbfs
from core.config import Settings
from core.echo_canceller import EchoCanceller, EchoSettings
from core.microphone_path import PRE_ROLL_S, MicrophonePath
from core.playout import Playout

AHEAD = 3  # far blocks reach the canceller this many frames before the near frame of their time


def _sent_over_an_answer(scene) -> tuple[list[np.ndarray], int | None]:
    """Everything the path hands the track, draining what it holds back as the track does;
    and the frame the decider fired on."""
    fired: list[int] = []
    playout = Playout()
    path = MicrophonePath(playout, on_voice=lambda: fired.append(k))
    path.configure(Settings(echo_cancellation=True, noise_suppression=True), hands_free=True)
    assert playout.on_played is not None
    far = scene.far.reshape(-1, FRAME_SAMPLES)
    near = scene.near.reshape(-1, FRAME_SAMPLES)
    for k in range(AHEAD):
        playout.on_played(far[k], k * FRAME_SECONDS)
    sent = []
    for k in range(len(near)):
        if k + AHEAD < len(far):
            playout.on_played(far[k + AHEAD], (k + AHEAD) * FRAME_SECONDS)
        sent.append(path.process((k * FRAME_SECONDS, near[k])))
        while path.held_back:
            sent.append(path.process(None))
    return sent, fired[0] if fired else None


def test_the_users_first_words_over_an_answer_are_sent_once_the_decider_is_sure(speech) -> None:
    scene = make_scene(speech, with_user=True, user_at_s=2.5)
    cleaned, _ = run_canceller(EchoCanceller(EchoSettings(echo_cancellation=True, noise_suppression=True)), scene,
                               ahead=AHEAD)
    cleaned_frames = list(cleaned.reshape(-1, FRAME_SAMPLES))
    onset = next(k for k, f in enumerate(scene.user.reshape(-1, FRAME_SAMPLES)) if level_dbfs(np.round(f)) > ONSET_DBFS)
    sent, fired = _sent_over_an_answer(scene)
    assert fired is not None and onset <= fired, "the decider did not hear the user"
    held = round(PRE_ROLL_S / FRAME_SECONDS)
    assert fired - onset < held, f"the decider was sure {(fired - onset) * 20} ms in: longer than the pre-roll"
    # Up to the decision her echo went out as comfort noise, the user's first words with it...
    assert all(level_dbfs(f) < -55 for f in sent[onset:fired])
    # ...then the cleaned microphone from PRE_ROLL_S before the deciding frame on, every frame once, in order.
    assert len(sent) == len(cleaned_frames) + held
    assert all(np.array_equal(a, b) for a, b in zip(sent[fired:], cleaned_frames[fired - held:], strict=True))
