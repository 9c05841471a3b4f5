"""Transport liveness (core/call/liveness.py): the pure policy on a fake clock, then the
prober with the shipped default timings on real aiortc peers — the local server process
and a quiet peer process frozen with SIGSTOP, and two peers through a relay that pauses
all traffic."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from pathlib import Path

import aioice.stun
import pytest
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCConfiguration, RTCPeerConnection

from bench.jitter_relay import JitterRelay
from bench.liveness import LossWatch, quiet_server_detect_ms, relayed_pair, stall_false_losses, \
    streaming_server_detect_ms
from core.call.liveness import (
    LOST_AFTER_S,
    PROBE_INTERVAL_S,
    REFUSED_FOR_S,
    LivenessPolicy,
    LivenessTimings,
    LivenessUnavailable,
    Lost,
    start,
)

# A loss is reported at the first tick once LOST_AFTER_S passed since the last sign of
# life, which a quiet peer gave with its last probe reply up to one interval before it went.
EARLIEST_S = LOST_AFTER_S - PROBE_INTERVAL_S - 0.05
TARGET_S = 3.0


def ticks(start_s: float, end_s: float, step_s: float = PROBE_INTERVAL_S) -> list[float]:
    return [round(start_s + i * step_s, 6) for i in range(int(round((end_s - start_s) / step_s)) + 1)]


def first_loss(proofs: list[float], probes: list[float], checks: list[float]) -> float | None:
    """Replay a timeline on a policy created at t=0; the time of the first Lost, if any.

    At equal times: proofs first, then the check, then the probe (the prober's order).
    """
    policy = LivenessPolicy(0.0)
    timeline = sorted([(t, 0) for t in proofs] + [(t, 1) for t in checks] + [(t, 2) for t in probes])
    for t, kind in timeline:
        if kind == 0:
            policy.proof_of_life(t)
        elif kind == 2:
            policy.probe_sent(t)
        elif policy.check(t) is not None:
            return t
    return None


EVERY_TICK = ticks(0.25, 10.0)

POLICY_TABLE = [
    # name, proofs, probes, checks, first loss
    ("a streaming peer", ticks(0.0, 10.0, 0.02), EVERY_TICK, EVERY_TICK, None),
    ("a quiet peer answering every probe", [t + 0.01 for t in EVERY_TICK], EVERY_TICK, EVERY_TICK, None),
    ("silent from the start", [], EVERY_TICK, EVERY_TICK, 2.5),
    ("silent after 1 s", ticks(0.0, 1.0, 0.02), EVERY_TICK, EVERY_TICK, 3.5),
    ("a 1.5 s pause, then life again", ticks(0.0, 1.0, 0.02) + ticks(2.5, 10.0, 0.02), EVERY_TICK, EVERY_TICK,
     None),
    ("a 2.4 s pause is the most it survives", ticks(0.0, 1.0, 0.02) + ticks(3.4, 10.0, 0.02), EVERY_TICK,
     EVERY_TICK, None),
    ("silence without a probe is no proof of death", [], [], EVERY_TICK, None),
    ("the first probe in the silence gets its answer window", [], [2.4], EVERY_TICK, 3.0),
    ("a probe sent before the last proof does not count", [1.0], [0.5], EVERY_TICK, None),
    # Our loop stalled from 2.25 to 3.0: that check is not judged, nor any before the probe
    # sent at 3.0 has had its 0.5 s to be answered.
    ("a stalled check is skipped", [], EVERY_TICK, ticks(0.25, 2.25) + ticks(3.0, 10.0), 3.5),
    ("life right after our stall", [3.1], EVERY_TICK, ticks(0.25, 2.25) + ticks(3.0, 10.0), 5.75),
    ("a check 0.5 s late still counts", [], EVERY_TICK, ticks(0.25, 2.25) + [2.75, 3.0], 2.75),
]


@pytest.mark.parametrize(("proofs", "probes", "checks", "expected"), [row[1:] for row in POLICY_TABLE],
                         ids=[row[0] for row in POLICY_TABLE])
def test_policy_decides_from_the_timeline(proofs: list[float], probes: list[float], checks: list[float],
                                          expected: float | None) -> None:
    assert first_loss(proofs, probes, checks) == expected


REFUSAL_TABLE = [
    # name, proofs, refusals (ICMP port unreachable from the peer), first loss
    ("killed at 1 s: its host refuses every packet", ticks(0.0, 1.0, 0.02), ticks(1.02, 10.0, 0.02), 1.75),
    ("a stray refusal decides nothing", ticks(0.0, 10.0, 0.02), [1.01], None),
    ("refusals that stop with life again", ticks(0.0, 1.0, 0.02) + ticks(1.4, 10.0, 0.02), ticks(1.02, 1.38, 0.02),
     None),
    ("life between refusals starts the count again", ticks(0.0, 1.0, 0.02) + [1.45], ticks(1.02, 1.44, 0.02)
     + ticks(1.5, 10.0, 0.02), 2.0),
]


@pytest.mark.parametrize(("proofs", "refusals", "expected"), [row[1:] for row in REFUSAL_TABLE],
                         ids=[row[0] for row in REFUSAL_TABLE])
def test_refusals_from_the_peers_address_are_a_loss_only_when_they_persist(
        proofs: list[float], refusals: list[float], expected: float | None) -> None:
    policy = LivenessPolicy(0.0)
    timeline = sorted([(t, 0) for t in proofs] + [(t, 1) for t in refusals] + [(t, 2) for t in EVERY_TICK])
    lost = None
    for t, kind in timeline:
        if kind == 0:
            policy.proof_of_life(t)
        elif kind == 1:
            policy.refused(t)
        elif (verdict := policy.check(t)) is not None:
            lost = t
            assert verdict.refused and "refused" in verdict.describe()
            break
        else:
            policy.probe_sent(t)
    assert lost == expected


def test_policy_reports_what_it_saw_and_ignores_proofs_from_the_past() -> None:
    policy = LivenessPolicy(0.0)
    policy.proof_of_life(1.0)
    policy.proof_of_life(0.5)  # late-measured: must not move the last sign of life back
    for t in ticks(1.25, 3.25):
        policy.probe_sent(t)
        verdict = policy.check(t + 0.25)
        if verdict is not None:
            break
    assert verdict == Lost(silent_s=2.5, unanswered_probes=9)
    assert "9 connectivity probes" in verdict.describe() and "2.5 s" in verdict.describe()
    stalled = LivenessPolicy(0.0)
    assert stalled.check(0.6) is None and stalled.stalled_checks == 1


def test_timings_that_could_judge_before_a_probe_had_its_chance_are_refused() -> None:
    with pytest.raises(ValueError, match="lost_after_s"):
        LivenessTimings(probe_interval_s=0.5, lost_after_s=1.0, answer_window_s=0.5)
    with pytest.raises(ValueError, match="positive"):
        LivenessTimings(probe_interval_s=0.0)
    assert LivenessTimings().lost_after_s == LOST_AFTER_S


# --- real peers, shipped default timings -------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_frozen_streaming_server_is_lost_within_3_s(tmp_path: Path) -> None:
    (ms,) = await streaming_server_detect_ms(tmp_path, runs=1)
    assert EARLIEST_S * 1000 <= ms <= TARGET_S * 1000


@pytest.mark.timeout(60)
async def test_a_frozen_quiet_peer_is_lost_within_3_s() -> None:
    ms = await quiet_server_detect_ms()
    assert EARLIEST_S * 1000 <= ms <= TARGET_S * 1000


@pytest.mark.timeout(60)
async def test_a_killed_peer_is_lost_on_its_hosts_refusals_well_before_the_silence_rule() -> None:
    ms = await quiet_server_detect_ms(signal.SIGKILL)
    assert REFUSED_FOR_S * 1000 <= ms <= (REFUSED_FOR_S + 2 * PROBE_INTERVAL_S) * 1000 + 250


@pytest.mark.timeout(60)
async def test_five_pauses_of_1_5_s_are_not_a_loss() -> None:
    # A streaming pair and a quiet one side by side (the time it takes one), each checked
    # from both ends; the extra load is what a real client lives with.
    runs = await asyncio.gather(*(stall_false_losses(5, streaming=streaming) for streaming in (True, False)))
    for run in runs:
        assert run.dropped_while_paused >= 10  # the pauses did cut the traffic (probes at least)
    assert [run.losses for run in runs] == [0, 0]


async def _loss_after_long_pause(streaming: bool) -> list[float]:
    """Seconds from the start of a 5 s pause to the loss report, at each end of the pair."""
    async with JitterRelay(max_delay_s=0.0, drop_rate=0.0, lifetime_s=30.0) as relay:
        async with relayed_pair(relay, streaming=streaming) as pair:
            watches = [LossWatch(pc) for pc in pair]
            try:
                await asyncio.sleep(1.0)
                paused_at = asyncio.get_running_loop().time()
                relay.pause()
                lost_at = [await watch.wait(5.0) for watch in watches]
                relay.resume()
            finally:
                for watch in watches:
                    watch.liveness.stop()
            assert all(pc.connectionState == "connected" for pc in pair)  # aiortc alone saw nothing
    return [at - paused_at for at in lost_at]


@pytest.mark.timeout(60)
async def test_a_5_s_pause_is_a_loss_seen_from_both_ends() -> None:
    streaming, quiet = await asyncio.gather(_loss_after_long_pause(True), _loss_after_long_pause(False))
    for after_s in streaming + quiet:
        assert EARLIEST_S <= after_s <= 3.5, (streaming, quiet)


# --- the guarded hook --------------------------------------------------------------------


def _nominated(pc: RTCPeerConnection) -> tuple[Connection, CandidatePair]:
    conn = pc.sctp.transport.transport._connection
    return conn, next(iter(conn._nominated.values()))


async def _request_without_retransmissions(self: StunProtocol, request: object, addr: object) -> None:
    raise AssertionError("never called")


BREAKAGES: list[tuple[str, Callable[[pytest.MonkeyPatch, RTCPeerConnection], None]]] = [
    ("RTCIceTransport._connection", lambda mp, pc: mp.delattr(pc.sctp.transport.transport, "_connection")),
    ("Connection._nominated", lambda mp, pc: mp.delattr(_nominated(pc)[0], "_nominated")),
    ("Connection.build_request", lambda mp, pc: mp.delattr(Connection, "build_request")),
    ("Connection.data_received", lambda mp, pc: mp.setattr(Connection, "data_received", lambda self, data: None)),
    ("Connection.remote_password", lambda mp, pc: mp.setattr(_nominated(pc)[0], "remote_password", None)),
    ("CandidatePair.protocol", lambda mp, pc: mp.delattr(_nominated(pc)[1], "protocol")),
    ("CandidatePair.remote_addr", lambda mp, pc: mp.delattr(CandidatePair, "remote_addr")),
    ("StunProtocol.request", lambda mp, pc: mp.setattr(StunProtocol, "request", _request_without_retransmissions)),
    ("StunProtocol.receiver", lambda mp, pc: mp.setattr(_nominated(pc)[1].protocol, "receiver", object())),
    ("aioice.stun.TransactionError", lambda mp, pc: mp.delattr(aioice.stun, "TransactionError")),
    ("aioice.stun.RETRY_RTO", lambda mp, pc: mp.delattr(aioice.stun, "RETRY_RTO")),
]


@pytest.mark.timeout(30)
async def test_every_missing_private_piece_fails_loudly_by_name_and_the_hook_is_per_instance() -> None:
    async with JitterRelay(max_delay_s=0.0, drop_rate=0.0, lifetime_s=30.0) as relay:
        async with relayed_pair(relay, streaming=False) as (a, b):
            for piece, breaks in BREAKAGES:
                with pytest.MonkeyPatch.context() as mp:
                    breaks(mp, a)
                    with pytest.raises(LivenessUnavailable, match=piece.replace(".", r"\.")) as caught:
                        start(a, lambda reason: None)
                    assert re.search(r"aiortc \d+\.\d+", str(caught.value))  # names the version
            conn, _ = _nominated(a)
            liveness = start(a, lambda reason: None)
            try:
                assert "data_received" in vars(conn)  # wrapped on this connection only
                assert "data_received" not in vars(_nominated(b)[0])
                assert Connection.data_received.__qualname__ == "Connection.data_received"
                await asyncio.sleep(1.0)
                assert liveness.probes_answered >= 2 and liveness.lost is None
            finally:
                liveness.stop()
            assert "data_received" not in vars(conn)  # stop() unwrapped it
            liveness.stop()  # idempotent


async def test_starting_before_the_connection_is_up_is_refused() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        with pytest.raises(ValueError, match="no transport"):
            start(pc, lambda reason: None)
        pc.createDataChannel("x")
        with pytest.raises(ValueError, match="once the connection is up"):
            start(pc, lambda reason: None)
    finally:
        await pc.close()
