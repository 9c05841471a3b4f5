"""HTTP request checks and OpenAI's JSON error shape, with no I/O.

Every refusal the server makes is an ApiError, turned into
{"error": {"message", "type", "code", "param"}} at one place (app.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.realtime import keys
from server.realtime.session import SessionConfig, SessionError, apply_session_update

MAX_BODY_BYTES = 64 * 1024


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after_s: int | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


def bearer_token(authorization: str | None) -> str:
    """The token of an 'Authorization: Bearer …' header; 401 when missing or malformed."""
    if not authorization:
        raise ApiError(401, "Missing bearer authentication in the Authorization header.",
                       code="missing_authorization")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "The Authorization header must be 'Bearer <key>'.", code="invalid_authorization")
    return token.strip()


def check_content_length(content_length: int | None) -> None:
    """413 before reading a body that says it is too big."""
    if content_length is not None and content_length > MAX_BODY_BYTES:
        raise body_too_large()


def body_too_large() -> ApiError:
    return ApiError(413, f"The request body is larger than {MAX_BODY_BYTES // 1024} KB.", code="request_too_large")


def check_content_type(content_type: str, expected: str) -> None:
    if content_type.lower() != expected:
        raise ApiError(415, f"Content-Type must be {expected}, got {content_type or 'none'}.",
                       code="unsupported_media_type")


@dataclass(frozen=True)
class SecretRequest:
    ttl_s: int
    session: SessionConfig


def parse_client_secret_request(body: bytes, defaults: SessionConfig) -> SecretRequest:
    """The client_secrets JSON body (may be empty) → TTL and session; 400 on anything odd."""
    if not body.strip():
        return SecretRequest(keys.DEFAULT_TTL_S, defaults)
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}.", code="invalid_json") from exc
    except RecursionError as exc:  # nesting deeper than Python's parser goes
        raise ApiError(400, "The body nests too deeply to be a request.", code="invalid_json") from exc
    if not isinstance(raw, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_type")
    ttl = keys.DEFAULT_TTL_S
    expires = raw.get("expires_after")
    if expires is not None:
        if not isinstance(expires, dict):
            raise ApiError(400, "'expires_after' must be an object.", code="invalid_type", param="expires_after")
        anchor = expires.get("anchor", "created_at")
        if anchor != "created_at":
            raise ApiError(400, "'expires_after.anchor' must be 'created_at'.", code="invalid_value",
                           param="expires_after.anchor")
        seconds = expires.get("seconds", keys.DEFAULT_TTL_S)
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise ApiError(400, "'expires_after.seconds' must be an integer.", code="invalid_type",
                           param="expires_after.seconds")
        if not keys.MIN_TTL_S <= seconds <= keys.MAX_TTL_S:
            raise ApiError(400, f"'expires_after.seconds' must be between {keys.MIN_TTL_S} and {keys.MAX_TTL_S}.",
                           code="invalid_value", param="expires_after.seconds")
        ttl = seconds
    session = defaults
    if raw.get("session") is not None:
        try:
            session = apply_session_update(defaults, raw["session"])
        except SessionError as exc:
            raise ApiError(400, str(exc), code="invalid_value", param=exc.param) from exc
    return SecretRequest(ttl, session)
