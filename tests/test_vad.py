"""Energy VAD: starts on sustained speech, ignores clicks and dither, stops after the silence time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from server.realtime.vad import EnergyVad, VadKind, threshold_dbfs

FRAME = 960
RNG = np.random.default_rng(7)


def noise(dbfs: float, frames: int = 1) -> list[np.ndarray]:
    rms = 32768 * 10 ** (dbfs / 20)
    return [(RNG.standard_normal(FRAME) * rms).clip(-32768, 32767).astype(np.int16) for _ in range(frames)]


def run(vad: EnergyVad, frames: list[np.ndarray]) -> list[tuple[VadKind, int]]:
    return [(e.kind, e.sample) for f in frames if (e := vad.push(f)) is not None]


def test_speech_then_silence_gives_start_and_stop_at_the_right_samples() -> None:
    vad = EnergyVad(threshold=0.5, silence_ms=500, start_ms=60)
    frames = noise(-60, 10) + noise(-20, 50) + noise(-60, 40)
    events = run(vad, frames)
    assert events == [(VadKind.SPEECH_STARTED, 10 * FRAME), (VadKind.SPEECH_STOPPED, 60 * FRAME)]
    assert not vad.in_speech


def test_a_click_and_dither_are_not_speech() -> None:
    vad = EnergyVad()
    frames = noise(-60, 20) + noise(-10, 2) + noise(-60, 20) + [np.zeros(FRAME, np.int16)] * 10
    assert run(vad, frames) == []


def test_short_pauses_inside_speech_do_not_end_it() -> None:
    vad = EnergyVad(silence_ms=500)
    frames = noise(-20, 20) + noise(-60, 15) + noise(-20, 20) + noise(-60, 30)
    kinds = [k for k, _ in run(vad, frames)]
    assert kinds == [VadKind.SPEECH_STARTED, VadKind.SPEECH_STOPPED]


def test_reset_forgets_a_half_heard_turn() -> None:
    vad = EnergyVad()
    run(vad, noise(-20, 10))
    assert vad.in_speech
    vad.reset()
    assert not vad.in_speech and run(vad, noise(-60, 40)) == []


def test_threshold_maps_onto_dbfs() -> None:
    assert threshold_dbfs(0.0) < threshold_dbfs(0.5) < threshold_dbfs(1.0)
    assert -60 < threshold_dbfs(0.5) < -30


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([-90.0, -60.0, -35.0, -20.0, -6.0]), min_size=1, max_size=120))
def test_events_alternate_and_move_forward(levels: list[float]) -> None:
    vad = EnergyVad()
    events = run(vad, [noise(level)[0] for level in levels])
    kinds = [k for k, _ in events]
    assert kinds == [VadKind.SPEECH_STARTED, VadKind.SPEECH_STOPPED] * (len(kinds) // 2) + \
        ([VadKind.SPEECH_STARTED] if len(kinds) % 2 else [])
    samples = [s for _, s in events]
    assert samples == sorted(samples) and all(0 <= s <= len(levels) * FRAME for s in samples)
