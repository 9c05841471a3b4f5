"""bench.jitter_relay.JitterRelay.unfillable_gap_pct: which of the relay's drops leave a hole in the echo."""

from __future__ import annotations

import pytest

from bench.jitter_relay import DirectionStats, JitterRelay


@pytest.mark.parametrize("to_server, to_client, fills, expected", [
    # The local echo server sends a frame every 20 ms: only the way back makes holes.
    ((100, 3), (100, 1), True, 1.0),
    ((100, 0), (100, 2), True, 2.0),
    ((100, 5), (100, 0), True, 0.0),
    # An echo peer that sends one frame per frame received passes the outbound holes on.
    ((100, 3), (100, 1), False, 4.0),
    ((100, 5), (100, 0), False, 5.0),
    # Nothing seen, nothing dropped.
    ((0, 0), (0, 0), False, 0.0),
])
def test_only_drops_that_leave_a_hole_in_the_echo_are_counted(
        to_server: tuple[int, int], to_client: tuple[int, int], fills: bool, expected: float) -> None:
    relay = JitterRelay()
    # Stats are keyed by receiver: "b" is the far end (the server), "a" the caller.
    relay.stats["b"] = DirectionStats(rtp_seen=to_server[0], rtp_dropped=to_server[1])
    relay.stats["a"] = DirectionStats(rtp_seen=to_client[0], rtp_dropped=to_client[1])
    assert relay.unfillable_gap_pct(far_end_fills_losses=fills) == pytest.approx(expected)
