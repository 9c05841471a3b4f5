"""Stand-in until the consent-based checker lands: nothing at all from the peer for 10 s is a loss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiortc import RTCPeerConnection

TIMEOUT_S = 10.0


class Liveness:
    def __init__(self, pc: RTCPeerConnection, on_lost: Callable[[str], None]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(pc, on_lost), name="liveness")

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self, pc: RTCPeerConnection, on_lost: Callable[[str], None]) -> None:
        packets, last = 0, time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            received = sum(getattr(s, "packetsReceived", 0) for s in (await pc.getStats()).values()
                           if s.type == "transport")
            now = time.monotonic()
            if received > packets:
                packets, last = received, now
            elif now - last > TIMEOUT_S:
                on_lost(f"nothing from the server for {now - last:.1f} s")
                return


def start(pc: RTCPeerConnection, on_lost: Callable[[str], None]) -> Liveness:
    return Liveness(pc, on_lost)
