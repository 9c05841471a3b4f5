"""bench.device_echo's pure parts: click onsets, the recording clock, following a click through the probes."""

from __future__ import annotations

import numpy as np
import pytest

from base.pcm import RATE
from bench.device_echo import RecordingClock, click_train, note_onset, onsets, pair_clicks


def test_onsets_finds_each_click_of_a_train_once() -> None:
    train = click_train(3.0)
    # 16000·sin(2π·1 kHz·t) passes the 3000 threshold at its third sample.
    assert onsets(train) == [i * RATE + 2 for i in range(3)]


def test_a_click_straddling_two_blocks_is_one_onset() -> None:
    train = click_train(1.0)
    times: list[float] = []
    note_onset(times, train[:240], 10.0)  # the click's first 5 ms
    note_onset(times, train[240:1200], 10.005)  # its tail, in the next block
    assert times == [pytest.approx(10.0 + 2 / RATE)]


def test_the_recording_clock_trusts_the_chunk_that_came_soonest() -> None:
    clock = RecordingClock()
    clock.chunk(960, 100.030)  # sample 960 arrived 10 ms late
    clock.chunk(960, 100.040)  # sample 1920 arrived on time: its samples began at 100.0
    clock.chunk(960, 100.075)
    assert clock.time_of(0) == pytest.approx(100.0)
    assert clock.time_of(RATE) == pytest.approx(101.0)


def test_pair_clicks_splits_each_round_trip_into_its_parts() -> None:
    mic = [1.0, 2.0, 3.0, 4.0]
    sent = [1.05, 2.05, 3.05]  # the fourth click was cut by the end of the call
    pulled = [1.10, 2.12, 3.10]
    speaker = [1.14, 2.16, 3.14]
    parts = pair_clicks(mic, sent, pulled, speaker, since=1.5)  # the first is in the warm-up
    assert parts.total == pytest.approx([160.0, 140.0])
    assert parts.capture == pytest.approx([50.0, 50.0])
    assert parts.network == pytest.approx([70.0, 50.0])
    assert parts.output == pytest.approx([40.0, 40.0])


def test_a_click_lost_on_the_way_is_left_out() -> None:
    parts = pair_clicks([1.0, 2.0], [1.05, 2.05], [1.10], [1.14, 2.30], since=0.0)
    assert parts.total == pytest.approx([140.0])


def test_click_train_is_silent_between_clicks() -> None:
    train = click_train(2.0)
    assert not np.any(train[RATE // 100 + 1: RATE])
