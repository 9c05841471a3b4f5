"""The HTTP side: OpenAI's client_secrets and calls endpoints on aiohttp.

Every refusal is an ApiError rendered in OpenAI's JSON error shape by one
middleware, which also turns aiohttp's own 404/405 and any unexpected exception
into that shape: no traceback page is ever served.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from server.listen import normalise_origin
from server.realtime import sdp, validation
from server.realtime.call import CallOptions, Mode, RealtimeCall
from server.realtime.events import new_id
from server.realtime.faults import Faults
from server.realtime.keys import EphemeralKeyStore
from server.realtime.session import SessionConfig, new_session_id
from server.realtime.speech import SpeechEngine
from server.realtime.validation import ApiError

log = logging.getLogger(__name__)

RETRY_AFTER_BUSY_S = 5
_CORS_MAX_AGE_S = 600


@dataclass
class ServerOptions:
    server_key: str
    mode: Mode = Mode.ASSISTANT
    max_calls: int = 8
    allow_origins: tuple[str, ...] = ()
    quiet_audio: bool = False  # send no RTP while not answering (CallOptions.quiet_audio)
    faults: Faults = field(default_factory=Faults)


class RealtimeServer:
    """Shared state of one server: keys, live calls, the speech engine."""

    def __init__(self, options: ServerOptions, speech: SpeechEngine | None = None) -> None:
        self.options = options
        self.speech = speech
        self.keys = EphemeralKeyStore()
        self.calls: dict[str, RealtimeCall] = {}
        self._pending_calls = 0  # offers being answered, counted against max_calls too

    # ---- application ----------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_and_cors], client_max_size=validation.MAX_BODY_BYTES)
        app.router.add_route("POST", "/v1/realtime/client_secrets", self.client_secrets)
        app.router.add_route("POST", "/v1/realtime/calls", self.create_call)
        app.router.add_route("POST", "/v1/realtime", self.create_call)  # the older (beta) path
        for path in ("/v1/realtime/client_secrets", "/v1/realtime/calls", "/v1/realtime"):
            app.router.add_route("OPTIONS", path, self.preflight)
        app.on_shutdown.append(self._close_all)
        return app

    async def _close_all(self, _app: web.Application) -> None:
        await asyncio.gather(*(call.close("server stopping") for call in list(self.calls.values())))

    @web.middleware
    async def _errors_and_cors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _error_response(exc)
        except web.HTTPException as exc:
            response = _error_response(_from_http_exception(exc))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the client gets a JSON 500, the log gets the details
            log.exception("unexpected error serving %s %s", request.method, request.path)
            response = _error_response(ApiError(500, "The server had an internal error.", type="server_error",
                                                code="internal_error"))
        origin = request.headers.get("Origin")
        if origin and normalise_origin(origin) in self.options.allow_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Location"
            response.headers["Vary"] = "Origin"
        return response

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if not origin or normalise_origin(origin) not in self.options.allow_origins:
            raise ApiError(403, "This origin is not allowed; start the server with --allow-origin ORIGIN.",
                           code="origin_not_allowed")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": str(_CORS_MAX_AGE_S),
        })

    # ---- endpoints --------------------------------------------------------------------

    async def client_secrets(self, request: web.Request) -> web.Response:
        validation.check_content_length(request.content_length)
        token = validation.bearer_token(request.headers.get("Authorization"))
        if not hmac.compare_digest(token.encode(), self.options.server_key.encode()):
            raise ApiError(401, "Incorrect server key provided.", code="invalid_api_key")
        failure = self.options.faults.take_token_failure()
        if failure is not None:
            raise ApiError(failure, f"Fault injected: this token request fails with {failure}.",
                           type="server_error" if failure >= 500 else "invalid_request_error",
                           code="fault_injected", retry_after_s=1 if failure == 429 else None)
        body = await _read_body(request)
        if body.strip():
            validation.check_content_type(request.content_type, "application/json")
        wanted = validation.parse_client_secret_request(body, SessionConfig())
        key = self.keys.issue(wanted.ttl_s, wanted.session)
        return web.json_response({"value": key.value, "expires_at": int(key.expires_at),
                                  "session": wanted.session.to_json(new_session_id(), key.expires_at)})

    async def create_call(self, request: web.Request) -> web.Response:
        validation.check_content_length(request.content_length)
        token = validation.bearer_token(request.headers.get("Authorization"))
        issued = self.keys.lookup(token)
        if issued is None:
            raise ApiError(401, "Unknown or expired ephemeral key; get a new one from /v1/realtime/client_secrets.",
                           code="invalid_api_key")
        validation.check_content_type(request.content_type, "application/sdp")
        offer, summary = sdp.check_offer(await _read_body(request))
        if len(self.calls) + self._pending_calls >= self.options.max_calls:
            raise ApiError(503, f"The server is at its limit of {self.options.max_calls} calls; try again later.",
                           type="server_error", code="too_many_calls", retry_after_s=RETRY_AFTER_BUSY_S)
        self._pending_calls += 1
        try:
            return await self._answer(offer, summary, issued.session)
        finally:
            self._pending_calls -= 1

    async def _answer(self, offer: str, summary: sdp.OfferSummary, session: SessionConfig) -> web.Response:
        faults = self.options.faults
        call_id = new_id("rtc")
        options = CallOptions(mode=self.options.mode, drop_after_s=faults.drop_after_s,
                              stall_datachannel=faults.stall_datachannel, quiet_audio=self.options.quiet_audio)
        call = RealtimeCall(call_id, session, options, self.speech, self._forget)
        started = time.monotonic()
        try:
            answer = await call.accept(offer)
        except Exception as exc:  # noqa: BLE001 - aiortc rejects some offers our checks let through
            await call.close(f"offer refused: {exc}")
            raise ApiError(400, f"The SDP offer could not be answered: {exc}.", code="invalid_offer") from exc
        self.calls[call_id] = call
        log.debug("call %s answered in %.0f ms (%d offered candidates)", call_id,
                  (time.monotonic() - started) * 1000, summary.candidates)
        if faults.sdp_delay_ms:
            await asyncio.sleep(faults.sdp_delay_ms / 1000)
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/v1/realtime/calls/{call_id}"})

    def _forget(self, call: RealtimeCall) -> None:
        self.calls.pop(call.id, None)


async def _read_body(request: web.Request) -> bytes:
    """The body, refused with 413 as soon as it passes the cap (declared or not)."""
    validation.check_content_length(request.content_length)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > validation.MAX_BODY_BYTES:
            raise validation.body_too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return ApiError(404, "Unknown path; the API lives under /v1/realtime.", code="not_found")
    if exc.status == 405:
        return ApiError(405, "Method not allowed; use POST.", code="method_not_allowed")
    if exc.status == 413:
        return validation.body_too_large()
    return ApiError(exc.status, exc.reason or "Request refused.", code="http_error")


def _error_response(exc: ApiError) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
    return web.Response(status=exc.status, text=json.dumps(exc.body()), content_type="application/json",
                        headers=headers)

