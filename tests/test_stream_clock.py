"""PortAudio's stamps on the monotonic clock (core.audio.StreamClock): a callback that ran
late must not move them; a step of the wall clock is followed. Time is passed in."""

from __future__ import annotations

import numpy as np
import pytest

from core.audio import StreamClock

WALL = 1_796_000_000.0  # PortAudio's clock on Linux is the wall clock
TRUE_OFFSET = 1000.0 - WALL  # monotonic = wall + this


def _callbacks(clock: StreamClock, lateness_ms: list[float], start: float = 1000.0, wall_step: float = 0.0,
               step_at: int | None = None) -> list[float]:
    """Callbacks every 10 ms, each reading monotonic `lateness` after PortAudio's current
    time; each maps a stamp 20 ms before it. Returns mapped minus true (ms)."""
    errors = []
    for k, late in enumerate(lateness_ms):
        mono = start + k * 0.010  # when PortAudio took current time, on the monotonic clock
        wall = mono - TRUE_OFFSET + (wall_step if step_at is not None and k >= step_at else 0.0)
        offset_now = mono - wall  # the truth at this callback
        mapped = clock.to_monotonic(wall - 0.020, wall, now=mono + late / 1000)
        errors.append((mapped - (wall - 0.020 + offset_now)) * 1000)
    return errors


def test_late_callbacks_do_not_move_the_stamps() -> None:
    lateness = np.random.default_rng(3).uniform(0, 30, 400)
    lateness[::50] = 0.0  # one timely callback in each half second
    assert max(abs(e) for e in _callbacks(StreamClock(), list(lateness))) < 1e-3


def test_a_late_first_callback_is_corrected_by_the_next_timely_one() -> None:
    errors = _callbacks(StreamClock(), [25.0, 12.0, 0.0, 18.0, 30.0])
    assert errors[0] == pytest.approx(25.0, abs=1e-3) and errors[1] == pytest.approx(12.0, abs=1e-3)
    assert max(abs(e) for e in errors[2:]) < 1e-3


@pytest.mark.parametrize("step_s", [+1.0, -1.0], ids=["wall clock forward", "wall clock back"])
def test_a_step_of_the_wall_clock_is_followed_within_the_window(step_s: float) -> None:
    errors = _callbacks(StreamClock(window_s=2.0), [0.0] * 600, wall_step=step_s, step_at=100)
    after = errors[100 + 201:]  # more than the window after the step
    assert max(abs(e) for e in errors[:100]) < 1e-3 and max(abs(e) for e in after) < 1e-3


def test_without_stamps_now_is_the_best_guess() -> None:
    assert StreamClock().to_monotonic(0.0, 0.0, now=5.0) == 5.0
