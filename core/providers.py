"""Providers: one HTTP code path for the ephemeral key and the SDP exchange, small adapters.

Every provider speaks the same two requests (PROTOCOL.md §1-2); an adapter only says
where the key request goes and how it authenticates:

- openai / custom / local: `POST BASE/realtime/client_secrets`, `Authorization: Bearer KEY`;
- azure: the same path under `https://RESOURCE.openai.azure.com/openai/v1`, but Azure
  wants the resource key in an `api-key` header;
- token_url: the deployment's own endpoint that returns the same JSON (the seed's widget
  got its token from its backend), optionally with a bearer key of its own.

Which kinds exist, and what each needs, is described once in core/provider_catalog.py.

The SDP exchange is the same for all: `POST BASE/realtime/calls` (or the legacy
`BASE/realtime?model=…`) with the ephemeral key as bearer. HTTP failures become the
user-readable errors of base.errors; every request has a bounded timeout and a bounded
body.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from core.config import Settings
from core.provider_catalog import OPENAI_BASE_URL, Auth, kind as provider_kind
from base.errors import AuthError, ConfigError, ProviderError
from base.loopback_ice import is_loopback_host
from base.logs import redact, register_secret

log = logging.getLogger(__name__)

KEY_TTL_SECONDS = 600
# Answers are a few KB of JSON or SDP; anything near this is not a realtime server.
MAX_BODY_BYTES = 1_000_000
_AZURE_RESOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")


@dataclass(frozen=True)
class EphemeralKey:
    """A short-lived key for one call; `value` never shows in repr or logs."""

    value: str = field(repr=False)
    expires_at: float

    def __post_init__(self) -> None:
        register_secret(self.value)

    def expires_in(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


class OutOfCredit(AuthError):
    """429 insufficient_quota: retrying cannot help, the account needs credit."""


class RateLimited(ProviderError):
    """429: the provider asks us to wait `retry_after` seconds (None if it did not say)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class _Request:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


class Provider(ABC):
    """One realtime provider. Subclasses only describe the key request."""

    #: Said when the provider refuses our credentials: what the user should do.
    auth_hint = "The provider refused the API key. Check it in Settings."

    def __init__(
        self,
        label: str,
        base_url: str,
        model: str,
        legacy_calls_endpoint: bool = False,
        token_timeout: float = 10.0,
        sdp_timeout: float = 15.0,
    ) -> None:
        self.label = label
        self.base_url = _check_url(base_url, "base URL").rstrip("/")
        self.model = model
        self.legacy_calls_endpoint = legacy_calls_endpoint
        self.token_timeout = token_timeout
        self.sdp_timeout = sdp_timeout

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(urlsplit(self.base_url).hostname)

    @abstractmethod
    def _key_request(self, body: dict[str, Any]) -> _Request:
        """Where the ephemeral-key request goes and how it authenticates."""

    def _key_body(self, session_config: dict[str, Any]) -> dict[str, Any]:
        session = {"type": "realtime", "model": self.model, **session_config}
        return {"expires_after": {"anchor": "created_at", "seconds": KEY_TTL_SECONDS}, "session": session}

    def calls_url(self) -> str:
        if self.legacy_calls_endpoint:
            return f"{self.base_url}/realtime?model={quote(self.model, safe='')}"
        return f"{self.base_url}/realtime/calls"

    async def create_ephemeral_key(self, http: aiohttp.ClientSession, session_config: dict[str, Any]) -> EphemeralKey:
        request = self._key_request(self._key_body(session_config))
        status, headers, body = await self._post(
            http, request.url, request.headers, json.dumps(request.body).encode(), "application/json", self.token_timeout
        )
        self._raise_for_status(status, headers, body, self.auth_hint)
        key = _parse_key(body, self.label)
        log.info("%s: ephemeral key received, valid %.0f s", self.label, key.expires_in())
        return key

    async def exchange_sdp(self, http: aiohttp.ClientSession, key: EphemeralKey, offer_sdp: str) -> str:
        """POST the offer, return the answer SDP."""
        headers = {"Authorization": f"Bearer {key.value}"}
        status, response_headers, body = await self._post(
            http, self.calls_url(), headers, offer_sdp.encode(), "application/sdp", self.sdp_timeout
        )
        try:
            self._raise_for_status(
                status, response_headers, body, f"{self.label} refused the session key; it may have expired."
            )
        except AuthError as exc:
            # The API key was fine a moment ago (it got us this session key): a restarted
            # server or an expired key is cured by the next attempt's fresh key, not fatal.
            raise ProviderError(str(exc)) from exc
        answer = body.decode("utf-8", errors="replace")
        if not answer.lstrip().startswith("v=0"):
            raise ProviderError(f"{self.label} did not answer with an SDP description (HTTP {status}).")
        log.info("%s: SDP answer received (%s)", self.label, response_headers.get("Location", "no call id"))
        return answer

    async def _post(
        self,
        http: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        data: bytes,
        content_type: str,
        timeout: float,
    ) -> tuple[int, Any, bytes]:
        host = urlsplit(url).netloc
        where = self.label if self.label == host else f"{self.label} at {host}"
        try:
            async with http.post(
                url,
                data=data,
                headers={**headers, "Content-Type": content_type},
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                body = await _read_bounded(response, self.label)
                return response.status, response.headers, body
        except asyncio.TimeoutError as exc:
            raise ProviderError(
                f"Cannot reach {where}: no answer within {timeout:.0f} s. Check your connection."
            ) from exc
        except aiohttp.ClientError as exc:
            reason = redact(str(exc)) or type(exc).__name__
            raise ProviderError(
                f"Cannot reach {where} ({reason}). Check your connection and the address in Settings."
            ) from exc

    def _raise_for_status(self, status: int, headers: Any, body: bytes, auth_hint: str) -> None:
        if 200 <= status < 300:
            return
        detail = _error_message(body)
        log.warning("%s answered HTTP %s: %s", self.label, status, detail or "(no message)")
        if status in (401, 403):
            raise AuthError(auth_hint)
        if status == 429 and _error_code(body) == "insufficient_quota":
            raise OutOfCredit(
                f"{self.label} says the account has no credit left (insufficient_quota). Add credit or raise "
                "the spending limit in the account's billing settings, then press Reconnect.")
        if status == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            wait = f" Try again in {retry_after:.0f} s." if retry_after is not None else " Try again later."
            raise RateLimited(f"{self.label} is rate-limiting requests.{wait}", retry_after)
        if status >= 500:
            raise ProviderError(f"{self.label} had a server error (HTTP {status}). Try again in a moment.")
        suffix = f": {detail}" if detail else ""
        raise ProviderError(f"{self.label} refused the request (HTTP {status}){suffix}")


class BearerProvider(Provider):
    """OpenAI and everything that copies its API: the key as a bearer token (or no key)."""

    def __init__(self, label: str, base_url: str, api_key: str | None, model: str, *, auth: Auth = Auth.BEARER,
                 token_url: str | None = None, auth_hint: str | None = None, **options: Any) -> None:
        super().__init__(label, base_url, model, **options)
        register_secret(api_key)
        self._api_key = api_key
        self._auth = auth
        # A deployment's own token endpoint (the seed's widget got its token from its backend).
        self.token_url = _check_url(token_url, "token URL") if token_url is not None else None
        if auth_hint:
            self.auth_hint = auth_hint

    def _auth_headers(self) -> dict[str, str]:
        if not self._api_key:
            return {}
        if self._auth is Auth.API_KEY_HEADER:
            return {"api-key": self._api_key}
        return {"Authorization": f"Bearer {self._api_key}"}

    def _key_request(self, body: dict[str, Any]) -> _Request:
        return _Request(self.token_url or f"{self.base_url}/realtime/client_secrets", self._auth_headers(), body)


def make_provider(
    settings: Settings,
    api_key: str | None,
    local_base_url: str | None = None,
    local_server_key: str | None = None,
) -> Provider:
    """The provider the settings describe; ConfigError says what is missing."""
    try:
        described = provider_kind(settings.provider)
    except KeyError:
        raise ConfigError(f"Unknown provider {settings.provider!r}. Choose one in Settings.") from None
    options: dict[str, Any] = {"legacy_calls_endpoint": settings.legacy_calls_endpoint, "auth": described.auth}
    model = settings.model or described.default_model
    if described.id == "local":
        if not local_base_url or not local_server_key:
            raise ConfigError("The built-in local server is not running.")
        return BearerProvider("the built-in local server", local_base_url, local_server_key, described.default_model,
                              auth_hint="The built-in local server refused the app's key. Restart Sandra.", **options)
    if described.needs_key and not api_key:
        raise ConfigError(f"No {described.label} API key. Enter it in Settings, or set SANDRA_API_KEY.")
    if described.uses_token_url:
        if not settings.token_url:
            raise ConfigError("Enter the token URL in Settings.")
        base = settings.base_url or OPENAI_BASE_URL
        return BearerProvider(urlsplit(base).netloc, base, api_key, model, token_url=settings.token_url,
                              auth_hint="The token URL refused the request. Check the token URL and its key in Settings.",
                              **options)
    if described.uses_azure_resource:
        base = _azure_base_url(settings)
    elif described.uses_base_url:
        if not settings.base_url:
            raise ConfigError("Enter the provider's base URL in Settings (for example https://host/v1).")
        base = settings.base_url
    else:
        base = OPENAI_BASE_URL
    label = described.label if not described.uses_base_url else (urlsplit(base).netloc or "the provider")
    return BearerProvider(label, base, api_key, model, **options)


def _azure_base_url(settings: Settings) -> str:
    if settings.base_url:  # a custom domain or a proxy in front of Azure
        return settings.base_url
    resource = settings.azure_resource.strip()
    if not _AZURE_RESOURCE.fullmatch(resource):
        raise ConfigError("Enter your Azure OpenAI resource name in Settings (the RESOURCE in RESOURCE.openai.azure.com).")
    return f"https://{resource}.openai.azure.com/openai/v1"


def _check_url(url: str, what: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"The {what} {url!r} is not an http(s) address.")
    return url.strip()


async def _read_bounded(response: aiohttp.ClientResponse, label: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProviderError(f"{label} sent an answer far too large for a realtime server.")
        chunks.append(chunk)
    return b"".join(chunks)


def _error_code(body: bytes) -> str:
    """The `error.code` of an OpenAI-shaped error body ("" when there is none)."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else ""


def _error_message(body: bytes) -> str:
    """The `error.message` of an OpenAI-shaped error body, short and redacted."""
    try:
        data = json.loads(body)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error")
    except (ValueError, TypeError, KeyError, AttributeError):
        message = None
    if not isinstance(message, str):
        return ""
    return redact(message)[:300]


def _parse_key(body: bytes, label: str) -> EphemeralKey:
    """`{"value", "expires_at"}` (GA), or the older `{"client_secret": {...}}` a token backend may return."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ProviderError(f"{label} answered the key request with something that is not JSON.") from exc
    if isinstance(data, dict) and "value" not in data and isinstance(data.get("client_secret"), dict):
        data = data["client_secret"]
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ProviderError(f"{label} answered the key request without a key.")
    expires_at = data.get("expires_at")
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
        # Some token backends omit it; assume the shortest TTL the API allows.
        log.debug("%s: key without expires_at; assuming 10 s", label)
        expires_at = time.time() + 10
    return EphemeralKey(value=value, expires_at=float(expires_at))
