"""LatencyTracker: nearest-rank percentiles, empty input, batches in the seed's wire format."""

from __future__ import annotations

import logging
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.telemetry import LatencyTracker, percentile, summarize


def nearest_rank(values: list[float], percent: int) -> float:
    """Plain reference in integer arithmetic: rank = ceil(n * percent / 100), 1-based."""
    ordered = sorted(values)
    rank = -(-len(ordered) * percent // 100)
    return ordered[max(rank, 1) - 1]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 19, 20, 21, 33, 99, 100, 101, 257, 1000, 1001])
def test_percentiles_match_the_reference(n: int) -> None:
    rng = random.Random(n)
    values = [round(rng.uniform(1, 2000), 3) for _ in range(n)]
    assert percentile(values, 0.95) == nearest_rank(values, 95)
    assert percentile(values, 0.99) == nearest_rank(values, 99)


def test_known_figures_on_1_to_100() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    stats = summarize(values)
    assert stats == {"count": 100, "avg": 50.5, "p95": 95.0, "p99": 99.0}


def test_small_inputs() -> None:
    assert summarize([7.0]) == {"count": 1, "avg": 7.0, "p95": 7.0, "p99": 7.0}
    assert summarize([10.0, 20.0]) == {"count": 2, "avg": 15.0, "p95": 20.0, "p99": 20.0}
    # n = 20: ceil(19.0) = 19 -> the 19th value, not the 20th (float rounding must not push it up).
    assert percentile([float(v) for v in range(1, 21)], 0.95) == 19.0


def test_empty_input_gives_none() -> None:
    assert percentile([], 0.95) is None
    assert summarize([]) == {"count": 0, "avg": None, "p95": None, "p99": None}
    assert LatencyTracker("s").stats() == {"count": 0, "avg": None, "p95": None, "p99": None}
    assert LatencyTracker("s").stats("connect")["p99"] is None


def test_callers_data_is_not_mutated() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    snapshot = list(values)
    percentile(values, 0.99)
    summarize(values)
    assert values == snapshot


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_match_the_reference_on_any_data(values: list[float]) -> None:
    assert percentile(values, 0.95) == nearest_rank(values, 95)
    assert percentile(values, 0.99) == nearest_rank(values, 99)


@pytest.mark.parametrize("p", [0.0, -0.5, 1.5])
def test_percentile_out_of_range_is_refused(p: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], p)


@pytest.mark.parametrize("ms", [-1.0, math.nan, math.inf, -math.inf, "12", None, True])
def test_bad_durations_are_refused(ms: object) -> None:
    tracker = LatencyTracker("s")
    with pytest.raises(ValueError):
        tracker.record("connect", ms)  # type: ignore[arg-type]
    assert tracker.recorded == 0


def test_stats_per_name_and_for_all() -> None:
    tracker = LatencyTracker("s")
    for ms in (100, 200, 300):
        tracker.record("connect", ms)
    tracker.record("sdp_exchange", 50)
    assert tracker.stats("connect") == {"count": 3, "avg": 200.0, "p95": 300.0, "p99": 300.0}
    assert tracker.stats() == {"count": 4, "avg": 162.5, "p95": 300.0, "p99": 300.0}
    assert tracker.stats("unknown")["count"] == 0
    assert sorted(tracker.names()) == ["connect", "sdp_exchange"]


def test_window_keeps_memory_flat() -> None:
    tracker = LatencyTracker("s", window=100)
    for i in range(10_000):
        tracker.record("response_latency", float(i))
    assert tracker.recorded == 10_000
    window = tracker.values("response_latency")
    assert window == [float(i) for i in range(9_900, 10_000)]
    assert tracker.stats("response_latency")["count"] == 100


def test_a_batch_every_batch_size_records_in_the_seed_format() -> None:
    batches: list[dict] = []
    tracker = LatencyTracker("session-1", batch_size=10, on_batch=batches.append, clock=lambda: 1_700_000_000.25)
    for i in range(9):
        tracker.record("token_acquisition", 100.0 + i)
    assert batches == []
    tracker.record("token_acquisition", 109.0)
    assert len(batches) == 1
    assert batches[0] == {
        "type": "realtime_latency",
        "sessionId": "session-1",
        "timestamp": 1_700_000_000_250,
        "metrics": {"count": 10, "avg": 104.5, "p95": 109.0, "p99": 109.0},
    }
    for _ in range(10):
        tracker.record("connect", 1.0)
    assert len(batches) == 2


def test_batches_describe_response_latency_once_there_is_one() -> None:
    batches: list[dict] = []
    tracker = LatencyTracker("s", batch_size=5, on_batch=batches.append)
    for ms in (900, 900, 900, 900):
        tracker.record("connect", ms)
    tracker.record("response_latency", 300)
    assert batches[-1]["metrics"] == {"count": 1, "avg": 300.0, "p95": 300.0, "p99": 300.0}


def test_a_failing_batch_handler_does_not_break_recording(caplog: pytest.LogCaptureFixture) -> None:
    def broken(payload: dict) -> None:
        raise RuntimeError("queue gone")

    tracker = LatencyTracker("s", batch_size=2, on_batch=broken)
    with caplog.at_level(logging.WARNING, logger="core.telemetry"):
        for _ in range(4):
            tracker.record("connect", 10)
    assert tracker.recorded == 4
    assert sum("queue gone" in r.getMessage() for r in caplog.records) == 2


def test_returned_values_are_copies() -> None:
    tracker = LatencyTracker("s")
    tracker.record("connect", 1)
    tracker.values("connect").append(99.0)
    tracker.stats()["count"] = 99
    assert tracker.values("connect") == [1.0]
