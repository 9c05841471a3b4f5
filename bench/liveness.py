"""How fast the transport liveness check (core/call/liveness.py) finds a dead peer, and
that a short stall of the link is not taken for one. Shipped default timings throughout.

- liveness_detect_ms_streaming_server: the local server (`--mode echo`, which streams
  audio all call long) is frozen with SIGSTOP; from the freeze to the loss report.
- liveness_detect_ms_quiet_peer: the same against a quiet peer process
  (rig/quiet_peer.py: a data channel only, it sends nothing), which shows it is alive
  only by answering the ICE consent probes.
- liveness_detect_ms_killed_peer: the quiet peer killed with SIGKILL: its host then
  answers our probes with ICMP "port unreachable", which the check takes as a loss
  after a few refusals, long before the silence rule would.
- stall_false_reconnects: losses reported over repeated 1.5 s pauses of all traffic,
  both ways, through a pausable relay between two aiortc peers; checked from both ends
  of a streaming pair and of a quiet pair. 0 expected.

The checker runs directly on the peer connection here, not through the engine; the
engine's own figures, the ones with targets, are bench.recovery's
dead_peer_detect_ms_streaming_server and dead_peer_detect_ms_quiet_server.

    python -m bench.liveness [--quick] [-v]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from base.loopback_ice import acquire_loopback_only, release_loopback_only
from bench.figures import Figures, cli, figures_from
from bench.jitter_relay import JitterRelay
from core.call.liveness import Liveness, start
from rig.quiet_peer import quiet_peer
from rig.realtime_client import RealtimeClient, ephemeral_key
from rig.server_process import start_server
from server.realtime.audio_out import OutputTrack, Pacing

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
SETTLE_S = 1.0  # the call runs a moment before anything fails
LOSS_TIMEOUT_S = 10.0  # the target is 3 s; a loss not seen in 10 s is a failure, not a figure
STALL_S = 1.5
RECOVER_S = 1.0  # between stalls: the link is back long enough to prove life again


class LossWatch:
    """A liveness check on one peer connection that records when (loop time) it reported a loss."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.lost_at: float | None = None
        self.reason = ""
        self._lost = asyncio.Event()
        self.liveness: Liveness = start(pc, self._on_lost)

    def _on_lost(self, reason: str) -> None:
        self.lost_at = asyncio.get_running_loop().time()
        self.reason = reason
        self._lost.set()

    async def wait(self, timeout: float) -> float:
        """Loop time of the loss report; TimeoutError if none comes in time."""
        async with asyncio.timeout(timeout):
            await self._lost.wait()
        assert self.lost_at is not None
        return self.lost_at


async def freeze_detect_ms(pc: RTCPeerConnection, pid: int, how: signal.Signals = signal.SIGSTOP) -> float:
    """SIGSTOP (or kill) the far end of a connected pc; ms until the liveness check reports it lost."""
    watch = LossWatch(pc)
    try:
        await asyncio.sleep(SETTLE_S)
        assert watch.lost_at is None, f"lost before the freeze: {watch.reason}"
        frozen_at = asyncio.get_running_loop().time()
        os.kill(pid, how)
        try:
            lost_at = await watch.wait(LOSS_TIMEOUT_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    finally:
        watch.liveness.stop()
    return (lost_at - frozen_at) * 1000.0


async def streaming_server_detect_ms(tmp: Path, runs: int) -> list[float]:
    """freeze_detect_ms against the local server in echo mode, which streams all call long."""
    server = start_server(tmp, "--mode", "echo")
    samples = []
    try:
        for _ in range(runs):
            client = await RealtimeClient.connect(server.base_url,
                                                  await ephemeral_key(server.base_url, server.server_key))
            try:
                samples.append(await freeze_detect_ms(client.pc, server.pid))
            finally:
                await client.close()
    finally:
        server.stop()
    return samples


async def quiet_server_detect_ms(how: signal.Signals = signal.SIGSTOP) -> float:
    async with quiet_peer() as peer:
        return await freeze_detect_ms(peer.pc, peer.pid, how)


async def _wait_connected(*pcs: RTCPeerConnection) -> None:
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        while any(pc.connectionState != "connected" for pc in pcs):
            if any(pc.connectionState in ("failed", "closed") for pc in pcs):
                raise RuntimeError(f"the pair did not connect: {[pc.connectionState for pc in pcs]}")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def relayed_pair(relay: JitterRelay, *, streaming: bool) -> AsyncIterator[tuple[RTCPeerConnection,
                                                                                       RTCPeerConnection]]:
    """Two connected aiortc peers on 127.0.0.1 through `relay`: (offerer "a", answerer "b").

    Both have a data channel. streaming: b sends audio all along (a sends back only RTCP
    reports); otherwise neither sends anything, and only consent probes show life.
    """
    acquire_loopback_only()
    # Bundled like the app's calls (core/ice_servers.py): one transport for audio and data.
    a, b = (RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
            for _ in range(2))
    track = OutputTrack(Pacing.CLOCK)  # silence on a real-time clock: 50 packets/s
    try:
        # Audio before the data channel, as the engine does: with max-bundle the other order
        # makes aiortc stop the shared transport when the answer arrives.
        if streaming:
            a.addTransceiver("audio", direction="recvonly")
        opened = asyncio.Event()
        a.createDataChannel("liveness").on("open", opened.set)
        await a.setLocalDescription(await a.createOffer())
        offer = await relay.rewrite(a.localDescription.sdp, "a")
        await b.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        if streaming:
            b.addTrack(track)
        await b.setLocalDescription(await b.createAnswer())
        answer = await relay.rewrite(b.localDescription.sdp, "b")
        await a.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await _wait_connected(a, b)
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await opened.wait()
        yield a, b
    finally:
        track.stop()
        await a.close()
        await b.close()
        release_loopback_only()


@dataclass(frozen=True)
class StallRun:
    losses: int  # reported from either end
    dropped_while_paused: int  # packets of any kind the pauses cut, both ways


async def stall_false_losses(stalls: int, *, streaming: bool) -> StallRun:
    """`stalls` pauses of STALL_S through the relay, each followed by RECOVER_S of link."""
    losses = 0
    async with JitterRelay(max_delay_s=0.0, drop_rate=0.0, lifetime_s=60.0 + stalls * 5) as relay:
        async with relayed_pair(relay, streaming=streaming) as pair:
            watches = [LossWatch(pc) for pc in pair]
            try:
                await asyncio.sleep(SETTLE_S)
                for _ in range(stalls):
                    relay.pause()
                    await asyncio.sleep(STALL_S)
                    relay.resume()
                    await asyncio.sleep(RECOVER_S)
                    for i, watch in enumerate(watches):
                        if watch.lost_at is not None:
                            log.info("false loss (%s pair, end %d): %s", "streaming" if streaming else "quiet", i,
                                     watch.reason)
                            losses += 1
                            watches[i] = LossWatch(pair[i])  # what a reconnect would give: a fresh check
            finally:
                for watch in watches:
                    watch.liveness.stop()
    return StallRun(losses, relay.stats["a"].paused_dropped + relay.stats["b"].paused_dropped)


async def measure(quick: bool) -> Figures:
    runs, stalls = (3, 4) if quick else (5, 10)
    samples: dict[str, list[float]] = {"liveness_detect_ms_streaming_server": [],
                                       "liveness_detect_ms_quiet_peer": [], "liveness_detect_ms_killed_peer": [],
                                       "stall_false_reconnects": []}
    with tempfile.TemporaryDirectory() as tmp:
        samples["liveness_detect_ms_streaming_server"] = await streaming_server_detect_ms(Path(tmp), runs)
    for _ in range(runs):
        samples["liveness_detect_ms_quiet_peer"].append(await quiet_server_detect_ms())
        samples["liveness_detect_ms_killed_peer"].append(await quiet_server_detect_ms(signal.SIGKILL))
    runs_of_stalls = [await stall_false_losses(stalls, streaming=streaming) for streaming in (True, False)]
    samples["stall_false_reconnects"].append(float(sum(run.losses for run in runs_of_stalls)))
    log.info("liveness samples: %s", samples)
    return figures_from(samples)


def run(quick: bool = False) -> Figures:
    return asyncio.run(measure(quick))


def main(argv: list[str] | None = None) -> int:
    return cli("python -m bench.liveness", __doc__ or "", run, "3 freezes and 4 stalls a pair instead of 5 and 10",
               argv, log)


if __name__ == "__main__":
    sys.exit(main())
