"""A fake OpenAI-shaped HTTP server on 127.0.0.1: the two requests of PROTOCOL.md §1-2.

It stands in for OpenAI's and Azure's own servers, which tests cannot reach. It checks
what a real one checks (auth header, content type, ephemeral key it issued), records
every request, and can be told to answer the next request of an endpoint with anything
(an error status, garbage, a delay):

    async with FakeOpenAI(api_key="sk-test-123456789") as fake:
        fake.base_url                 # "http://127.0.0.1:PORT/v1"
        fake.queue("client_secrets", 429, {"error": {...}}, headers={"Retry-After": "7"})
        fake.requests[-1].headers     # what the client sent

Endpoints, under any path prefix (so /v1/... and Azure's /openai/v1/... both work):
`client_secrets` (POST …/realtime/client_secrets), `calls` (POST …/realtime/calls),
`legacy` (POST …/realtime?model=…), `token` (POST /token, a deployment's own endpoint).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

ANSWER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
)


@dataclass
class Recorded:
    endpoint: str
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Canned:
    status: int
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": None}}


class FakeOpenAI:
    def __init__(self, api_key: str = "sk-test-fake-openai-key", auth: str = "bearer", ttl: int = 600) -> None:
        """`auth`: "bearer" (OpenAI: Authorization: Bearer KEY) or "api-key" (Azure: api-key: KEY)."""
        self.api_key = api_key
        self.auth = auth
        self.ttl = ttl
        self.requests: list[Recorded] = []
        self.issued_keys: list[str] = []
        self._queued: dict[str, list[Canned]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def queue(
        self,
        endpoint: str,
        status: int,
        body: bytes | str | dict[str, Any] = b"",
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next request to `endpoint` with this, instead of the normal behaviour."""
        self._queued.setdefault(endpoint, []).append(Canned(status, body, headers or {}, delay))

    def of(self, endpoint: str) -> list[Recorded]:
        return [r for r in self.requests if r.endpoint == endpoint]

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Cancel a slow handler when the client gives up, so a timeout test ends at once.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- behaviour ---------------------------------------------------------------------

    @staticmethod
    def _endpoint(request: web.Request) -> str:
        path = request.path.rstrip("/")
        if path.endswith("/realtime/client_secrets"):
            return "client_secrets"
        if path.endswith("/realtime/calls"):
            return "calls"
        if path.endswith("/realtime") and "model" in request.query:
            return "legacy"
        if path == "/token":
            return "token"
        return "unknown"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        endpoint = self._endpoint(request)
        body = await request.read()
        self.requests.append(
            Recorded(endpoint, request.method, request.path, dict(request.query), request.headers, body)
        )
        queued = self._queued.get(endpoint)
        if queued:
            canned = queued.pop(0)
            if canned.delay:
                await asyncio.sleep(canned.delay)
            return _respond(canned)
        if endpoint == "unknown" or request.method != "POST":
            return web.json_response(error_body("Not found"), status=404)
        if endpoint in ("client_secrets", "token"):
            return self._client_secret(request, body)
        return self._call(request, body)

    def _client_secret(self, request: web.Request, body: bytes) -> web.Response:
        if request.path != "/token" and not self._authorised(request):
            return web.json_response(error_body("Incorrect API key provided.", code="invalid_api_key"), status=401)
        try:
            payload = json.loads(body)
        except ValueError:
            return web.json_response(error_body("We could not parse the JSON body of your request."), status=400)
        key = "ek_" + secrets.token_hex(12)
        self.issued_keys.append(key)
        return web.json_response({"value": key, "expires_at": int(time.time()) + self.ttl,
                                  "session": payload.get("session", {})})

    def _authorised(self, request: web.Request) -> bool:
        if self.auth == "api-key":
            return request.headers.get("api-key") == self.api_key
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _call(self, request: web.Request, body: bytes) -> web.Response:
        bearer = request.headers.get("Authorization", "")
        if not bearer.startswith("Bearer ") or bearer[7:] not in self.issued_keys:
            return web.json_response(error_body("Invalid ephemeral key.", code="invalid_api_key"), status=401)
        if request.content_type != "application/sdp" or not body.startswith(b"v=0"):
            return web.json_response(error_body("The body must be an SDP offer."), status=400)
        call_id = "rtc_" + secrets.token_hex(8)
        return web.Response(
            status=201, text=ANSWER_SDP, content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{call_id}"},
        )


def _respond(canned: Canned) -> web.Response:
    if isinstance(canned.body, dict):
        return web.json_response(canned.body, status=canned.status, headers=canned.headers)
    data = canned.body.encode() if isinstance(canned.body, str) else canned.body
    return web.Response(status=canned.status, body=data, headers=canned.headers)
