"""ReconnectPolicy: the seed's exact schedule, its cap, reset, exhaustion and jitter bounds."""

from __future__ import annotations

import math

import pytest

from core.backoff import ReconnectPolicy


def drain(policy: ReconnectPolicy) -> list[float]:
    delays = []
    while (delay := policy.next_delay()) is not None:
        delays.append(delay)
    return delays


def test_default_schedule_is_the_seeds() -> None:
    policy = ReconnectPolicy()
    assert drain(policy) == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert policy.attempt == 5 and policy.max_attempts == 5
    assert policy.exhausted
    assert policy.next_delay() is None
    assert policy.attempt == 5  # asking again after exhaustion does not count


def test_cap_applies() -> None:
    policy = ReconnectPolicy(max_attempts=8)
    assert drain(policy) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_attempt_counts_for_the_ui() -> None:
    policy = ReconnectPolicy()
    policy.next_delay()
    policy.next_delay()
    assert f"attempt {policy.attempt}/{policy.max_attempts}" == "attempt 2/5"


def test_reset_restarts_the_schedule() -> None:
    policy = ReconnectPolicy()
    assert [policy.next_delay() for _ in range(3)] == [1.0, 2.0, 4.0]
    policy.reset()
    assert policy.attempt == 0
    assert drain(policy) == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_zero_attempts_gives_up_at_once() -> None:
    assert ReconnectPolicy(max_attempts=0).next_delay() is None


def test_huge_budget_does_not_overflow() -> None:
    policy = ReconnectPolicy(max_attempts=2000)
    delays = drain(policy)
    assert len(delays) == 2000
    assert delays[-1] == 30.0


def test_custom_base_and_factor() -> None:
    assert drain(ReconnectPolicy(base=0.01, factor=3.0, cap=1.0, max_attempts=6)) == pytest.approx(
        [0.01, 0.03, 0.09, 0.27, 0.81, 1.0]
    )


def test_jitter_is_bounded_and_seeded() -> None:
    exact = drain(ReconnectPolicy(max_attempts=7))
    first = drain(ReconnectPolicy(max_attempts=7, jitter=0.2, seed=42))
    second = drain(ReconnectPolicy(max_attempts=7, jitter=0.2, seed=42))
    other = drain(ReconnectPolicy(max_attempts=7, jitter=0.2, seed=43))
    assert first == second
    assert first != other
    assert first != exact
    for plain, jittered in zip(exact, first):
        assert plain * 0.8 <= jittered <= min(plain * 1.2, 30.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1.0},
        {"cap": math.nan},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"max_attempts": -1},
        {"max_attempts": 2.5},
    ],
)
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(**kwargs)
