"""A quiet WebRTC peer in a process of its own, so a test can freeze it with SIGSTOP.

It answers an offer with a data channel only and never sends anything of its own (no
track, no messages; aiortc sends no SCTP heartbeats): like a provider that sends audio
only while answering, it shows it is alive only by answering ICE consent checks.

    python -m rig.quiet_peer   # reads the offer SDP as one JSON line on stdin,
                               # prints the answer the same way, runs until stdin closes

``quiet_peer()`` is the caller's side: an aiortc peer connection on 127.0.0.1 with an
open data channel to such a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from base.loopback_ice import acquire_loopback_only, release_loopback_only

ROOT = Path(__file__).resolve().parent.parent
CONNECT_TIMEOUT_S = 20.0  # includes the child's start (importing aiortc) on a loaded machine


@dataclass
class QuietPeer:
    pc: RTCPeerConnection  # ours, connected to the child
    pid: int  # the child's, for SIGSTOP/SIGCONT/SIGKILL


@contextlib.asynccontextmanager
async def quiet_peer() -> AsyncIterator[QuietPeer]:
    """A connected call to a quiet peer process; the process is resumed and ended afterwards."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rig.quiet_peer", cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    acquire_loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        channel = pc.createDataChannel("quiet")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await pc.setLocalDescription(await pc.createOffer())
        child.stdin.write((json.dumps({"sdp": pc.localDescription.sdp}) + "\n").encode())
        await child.stdin.drain()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            line = await child.stdout.readline()
            if not line:
                raise RuntimeError(f"the quiet peer exited before answering (exit {await child.wait()})")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=json.loads(line)["sdp"], type="answer"))
            await opened.wait()
        yield QuietPeer(pc, child.pid)
    finally:
        await pc.close()
        release_loopback_only()
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGCONT)
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 5)
            except TimeoutError:
                child.kill()
                await child.wait()


async def _serve() -> None:
    acquire_loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    loop = asyncio.get_running_loop()
    try:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=json.loads(line)["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        print(json.dumps({"sdp": pc.localDescription.sdp}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the caller closes stdin
    finally:
        await pc.close()
        release_loopback_only()


if __name__ == "__main__":
    asyncio.run(_serve())
