"""A fake STUN server on 127.0.0.1 for tests: binding request in, binding success out.

    async with FakeStunServer() as srv:            # answers
        srv.url                                    # "stun:127.0.0.1:PORT"
    async with FakeStunServer(respond=False):      # silent: counts requests, never answers
    async with FakeStunServer(reply=lambda request, addr: b"junk"):  # answers what you say
    async with FakeStunServer(delay=0.3):          # answers, slowly

Tests must never probe a public STUN server; this is what they probe instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aioice import stun

Reply = Callable[[stun.Message, tuple[str, int]], bytes | None]


def binding_success(request: stun.Message, addr: tuple[str, int]) -> bytes:
    """What a real STUN server sends: the client's address as XOR-MAPPED-ADDRESS."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = addr
    return bytes(response)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: FakeStunServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        self.server.requests += 1
        reply = self.server.reply(request, (addr[0], addr[1])) if self.server.respond else None
        if reply is not None:
            asyncio.get_running_loop().call_later(self.server.delay, self._send, reply, addr)

    def _send(self, data: bytes, addr: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)


class FakeStunServer:
    def __init__(self, respond: bool = True, reply: Reply = binding_success, delay: float = 0.0) -> None:
        self.respond = respond
        self.reply = reply
        self.delay = delay
        self.requests = 0
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def url(self) -> str:
        return f"stun:127.0.0.1:{self.port}"

    async def start(self) -> FakeStunServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> FakeStunServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()
