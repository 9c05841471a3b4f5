"""Starting and stopping a realtime server inside this process (the command and the self-test)."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from aiohttp import web

from base import loopback_ice
from server.listen import http_url
from server.realtime.app import RealtimeServer, ServerOptions
from server.realtime.call import Mode
from server.realtime.speech import SpeechEngine

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    server: RealtimeServer
    runner: web.AppRunner
    host: str
    port: int
    loopback: bool

    @property
    def base_url(self) -> str:
        return f"{http_url(self.host, self.port)}/v1"

    async def stop(self) -> None:
        """Close every call, then the listener, then the speech engine."""
        try:
            await self.runner.cleanup()
            if self.server.speech is not None:
                await self.server.speech.close()
        finally:
            if self.loopback:
                loopback_ice.release_loopback_only()


async def start_server(host: str, port: int, options: ServerOptions) -> RunningServer:
    """Listen on host:port (0 = any free port); the speech engine is ready before it returns."""
    loopback = loopback_ice.is_loopback_host(host)
    if loopback:
        # Loopback host candidates only, so a call to a loopback server never leaves the machine.
        loopback_ice.acquire_loopback_only()
    runner: web.AppRunner | None = None
    speech: SpeechEngine | None = None
    try:
        speech = await SpeechEngine.start() if options.mode is Mode.ASSISTANT else None
        server = RealtimeServer(options, speech)
        runner = web.AppRunner(server.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = _bound_port(site)
        return RunningServer(server, runner, host, bound, loopback)
    except BaseException:
        if runner is not None:
            await runner.cleanup()
        if speech is not None:
            await speech.close()
        if loopback:
            loopback_ice.release_loopback_only()
        raise


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp exposes the asyncio server only here
    assert server is not None and server.sockets, "the site is not listening"
    for sock in server.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    raise RuntimeError("the server has no TCP socket")
