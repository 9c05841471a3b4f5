"""Providers against a fake OpenAI-shaped server on 127.0.0.1: what each adapter sends,
and how every failure reaches the user."""

from __future__ import annotations

import email.utils
import logging
import socket
import time

import aiohttp
import pytest

from core.config import Settings
from base.errors import AuthError, ConfigError, ProviderError
from base.logs import redact
from core.providers import (
    OPENAI_BASE_URL,
    BearerProvider,
    EphemeralKey,
    RateLimited,
    make_provider,
    parse_retry_after,
)
from rig.fake_openai import ANSWER_SDP, FakeOpenAI, error_body

API_KEY = "sk-test-provider-key-0123456789"
OFFER = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
SESSION = {"instructions": "Be brief.", "audio": {"output": {"voice": "marin"}}}


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def fake():
    async with FakeOpenAI(api_key=API_KEY) as server:
        yield server


def openai_at(base_url: str, **options) -> BearerProvider:
    """The OpenAI adapter pointed at the fake (the real one is unreachable from tests)."""
    return BearerProvider("OpenAI", base_url, API_KEY, "gpt-realtime", **options)


async def full_call(provider, http) -> tuple[EphemeralKey, str]:
    key = await provider.create_ephemeral_key(http, SESSION)
    return key, await provider.exchange_sdp(http, key, OFFER)


# --- success paths ------------------------------------------------------------------------


async def test_openai_shape(fake: FakeOpenAI, http, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key, answer = await full_call(openai_at(fake.base_url), http)
    assert answer == ANSWER_SDP
    assert key.value in fake.issued_keys and key.expires_in() > 500

    token, call = fake.requests
    assert (token.method, token.path) == ("POST", "/v1/realtime/client_secrets")
    assert token.headers["Authorization"] == f"Bearer {API_KEY}"
    assert token.headers["Content-Type"].startswith("application/json")
    body = token.json()
    assert body["expires_after"] == {"anchor": "created_at", "seconds": 600}
    assert body["session"] == {"type": "realtime", "model": "gpt-realtime", **SESSION}

    assert (call.method, call.path, call.query) == ("POST", "/v1/realtime/calls", {})
    assert call.headers["Authorization"] == f"Bearer {key.value}"
    assert call.headers["Content-Type"] == "application/sdp"
    assert call.body.decode() == OFFER
    # Neither key is ever logged.
    assert API_KEY not in caplog.text and key.value not in caplog.text


async def test_make_provider_openai_uses_the_public_endpoint() -> None:
    provider = make_provider(Settings(provider="openai", base_url="http://ignored.test/v1"), API_KEY)
    assert provider.base_url == OPENAI_BASE_URL
    assert provider.calls_url() == "https://api.openai.com/v1/realtime/calls"
    assert not provider.is_loopback


async def test_azure_sends_the_key_as_api_key_header(http) -> None:
    async with FakeOpenAI(api_key=API_KEY, auth="api-key") as fake:
        settings = Settings(provider="azure", base_url=f"{fake.url}/openai/v1", model="my-deployment")
        provider = make_provider(settings, API_KEY)
        key, answer = await full_call(provider, http)
    assert answer == ANSWER_SDP
    token, call = fake.requests
    assert token.path == "/openai/v1/realtime/client_secrets"
    assert token.headers["api-key"] == API_KEY
    assert "Authorization" not in token.headers
    assert token.json()["session"]["model"] == "my-deployment"
    assert call.path == "/openai/v1/realtime/calls"
    assert call.headers["Authorization"] == f"Bearer {key.value}"


def test_azure_base_url_from_the_resource_name() -> None:
    provider = make_provider(Settings(provider="azure", azure_resource="contoso-ai"), API_KEY)
    assert provider.base_url == "https://contoso-ai.openai.azure.com/openai/v1"
    assert provider.calls_url() == "https://contoso-ai.openai.azure.com/openai/v1/realtime/calls"
    for bad in ("", "contoso.openai.azure.com", "a b", "-x" + "y" * 70):
        with pytest.raises(ConfigError):
            make_provider(Settings(provider="azure", azure_resource=bad), API_KEY)


async def test_custom_base_url_with_and_without_key(fake: FakeOpenAI, http) -> None:
    provider = make_provider(Settings(provider="custom", base_url=fake.base_url + "/"), API_KEY)
    assert provider.base_url == fake.base_url and fake.url.split("//")[1] in provider.label
    await full_call(provider, http)
    assert fake.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    # A compatible server without keys: no Authorization header at all (the fake then refuses).
    keyless = make_provider(Settings(provider="custom", base_url=fake.base_url), None)
    with pytest.raises(AuthError):
        await keyless.create_ephemeral_key(http, SESSION)
    assert "Authorization" not in fake.requests[-1].headers


async def test_token_url_provider(fake: FakeOpenAI, http) -> None:
    settings = Settings(provider="token_url", base_url=fake.base_url, token_url=f"{fake.url}/token")
    key, answer = await full_call(make_provider(settings, None), http)
    token, call = fake.requests
    assert (token.endpoint, token.path) == ("token", "/token")
    assert "Authorization" not in token.headers
    assert token.json()["session"]["model"] == "gpt-realtime"
    assert call.path == "/v1/realtime/calls" and call.headers["Authorization"] == f"Bearer {key.value}"
    # With a key of its own, the token endpoint gets it as a bearer.
    await make_provider(settings, "backend-key-123456").create_ephemeral_key(http, SESSION)
    assert fake.requests[-1].headers["Authorization"] == "Bearer backend-key-123456"


async def test_token_url_older_client_secret_shape_is_accepted(fake: FakeOpenAI, http) -> None:
    fake.queue("token", 200, {"client_secret": {"value": "ek_nested_123456", "expires_at": time.time() + 60}})
    settings = Settings(provider="token_url", token_url=f"{fake.url}/token")
    provider = make_provider(settings, None)
    assert provider.base_url == OPENAI_BASE_URL
    key = await provider.create_ephemeral_key(http, SESSION)
    assert key.value == "ek_nested_123456" and 50 < key.expires_in() <= 60


async def test_local_provider_is_loopback_with_the_server_key(fake: FakeOpenAI, http) -> None:
    fake.api_key = "local-server-key-123456"
    provider = make_provider(Settings(provider="local"), None, fake.base_url, "local-server-key-123456")
    assert provider.is_loopback
    await full_call(provider, http)
    assert fake.requests[0].headers["Authorization"] == "Bearer local-server-key-123456"


async def test_legacy_calls_endpoint(fake: FakeOpenAI, http) -> None:
    provider = openai_at(fake.base_url, legacy_calls_endpoint=True)
    await full_call(provider, http)
    call = fake.requests[-1]
    assert (call.endpoint, call.path, call.query) == ("legacy", "/v1/realtime", {"model": "gpt-realtime"})


@pytest.mark.parametrize(
    "url,loopback",
    [("http://127.0.0.1:1/v1", True), ("http://localhost:1/v1", True), ("http://[::1]:1/v1", True),
     ("http://127.8.9.10/v1", True), ("https://api.openai.com/v1", False), ("http://10.0.0.1/v1", False)],
)
def test_is_loopback(url: str, loopback: bool) -> None:
    assert BearerProvider("x", url, None, "m").is_loopback is loopback


# --- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_key_is_an_auth_error(fake: FakeOpenAI, http, status: int) -> None:
    fake.queue("client_secrets", status, error_body("Incorrect API key provided: sk-test-***"))
    with pytest.raises(AuthError, match="refused the API key. Check it in Settings"):
        await openai_at(fake.base_url).create_ephemeral_key(http, SESSION)


async def test_wrong_key_against_the_real_check(fake: FakeOpenAI, http) -> None:
    provider = BearerProvider("OpenAI", fake.base_url, "sk-wrong-key-000000", "gpt-realtime")
    with pytest.raises(AuthError):
        await provider.create_ephemeral_key(http, SESSION)


async def test_local_auth_error_says_restart(fake: FakeOpenAI, http) -> None:
    provider = make_provider(Settings(provider="local"), None, fake.base_url, "not-the-server-key")
    with pytest.raises(AuthError, match="built-in local server"):
        await provider.create_ephemeral_key(http, SESSION)


@pytest.mark.parametrize(
    "header,expected",
    [("7", 7.0), ("0.5", 0.5), (None, None), ("soon", None)],
)
async def test_rate_limit_carries_retry_after(fake: FakeOpenAI, http, header: str | None, expected) -> None:
    fake.queue("client_secrets", 429, error_body("Rate limit reached", code="rate_limit_exceeded"),
               headers={"Retry-After": header} if header else {})
    with pytest.raises(RateLimited) as info:
        await openai_at(fake.base_url).create_ephemeral_key(http, SESSION)
    assert isinstance(info.value, ProviderError)
    assert info.value.retry_after == expected
    assert "rate-limiting" in str(info.value)


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("") is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors(fake: FakeOpenAI, http, status: int) -> None:
    fake.queue("client_secrets", status, "<html>oops</html>")
    with pytest.raises(ProviderError, match=f"server error \\(HTTP {status}\\)") as info:
        await openai_at(fake.base_url).create_ephemeral_key(http, SESSION)
    assert not isinstance(info.value, (AuthError, RateLimited))


async def test_other_client_errors_carry_the_servers_message(fake: FakeOpenAI, http) -> None:
    fake.queue("client_secrets", 400, error_body(f"Unknown parameter: 'session.foo' (key {API_KEY})"))
    with pytest.raises(ProviderError) as info:
        await openai_at(fake.base_url).create_ephemeral_key(http, SESSION)
    assert "Unknown parameter" in str(info.value) and "HTTP 400" in str(info.value)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(
    "body",
    ["not json at all", "[1, 2]", {"expires_at": 1}, {"value": ""}, {"value": 123}, {"client_secret": "x"}],
)
async def test_unusable_key_answers(fake: FakeOpenAI, http, body) -> None:
    fake.queue("client_secrets", 200, body)
    with pytest.raises(ProviderError) as info:
        await openai_at(fake.base_url).create_ephemeral_key(http, SESSION)
    assert "key request" in str(info.value)


async def test_connection_refused(http) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ProviderError, match="Cannot reach"):
        await openai_at(f"http://127.0.0.1:{port}/v1").create_ephemeral_key(http, SESSION)
    assert time.monotonic() - started < 2


async def test_token_timeout(fake: FakeOpenAI, http) -> None:
    fake.queue("client_secrets", 200, {"value": "ek_late_123456", "expires_at": 1}, delay=3)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="no answer within"):
        await openai_at(fake.base_url, token_timeout=0.3).create_ephemeral_key(http, SESSION)
    assert time.monotonic() - started < 1.5


async def test_sdp_timeout(fake: FakeOpenAI, http) -> None:
    provider = openai_at(fake.base_url, sdp_timeout=0.3)
    key = await provider.create_ephemeral_key(http, SESSION)
    fake.queue("calls", 201, ANSWER_SDP, delay=3)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="Cannot reach"):
        await provider.exchange_sdp(http, key, OFFER)
    assert time.monotonic() - started < 1.5


async def test_sdp_refused_key_and_garbage_answer(fake: FakeOpenAI, http) -> None:
    provider = openai_at(fake.base_url)
    stale = EphemeralKey("ek_never_issued_123456", time.time() + 60)
    # retriable, not fatal: the next attempt brings a fresh key
    with pytest.raises(ProviderError, match="session key") as refused:
        await provider.exchange_sdp(http, stale, OFFER)
    assert not isinstance(refused.value, AuthError)
    key = await provider.create_ephemeral_key(http, SESSION)
    fake.queue("calls", 201, "<html>proxy login</html>")
    with pytest.raises(ProviderError, match="SDP"):
        await provider.exchange_sdp(http, key, OFFER)
    fake.queue("calls", 503, error_body("busy"))
    with pytest.raises(ProviderError, match="HTTP 503"):
        await provider.exchange_sdp(http, key, OFFER)


async def test_redirects_are_not_followed(fake: FakeOpenAI, http) -> None:
    # Following one would send the API key to wherever it points.
    fake.queue("client_secrets", 307, "", headers={"Location": f"{fake.url}/elsewhere"})
    with pytest.raises(ProviderError, match="HTTP 307"):
        await openai_at(fake.base_url).create_ephemeral_key(http, SESSION)
    assert len(fake.requests) == 1


async def test_oversized_answer_is_refused(fake: FakeOpenAI, http) -> None:
    fake.queue("client_secrets", 200, b"x" * 2_000_000)
    with pytest.raises(ProviderError, match="too large"):
        await openai_at(fake.base_url).create_ephemeral_key(http, SESSION)


# --- configuration and secrets ------------------------------------------------------------


@pytest.mark.parametrize(
    "settings,key",
    [
        (Settings(provider="openai"), None),
        (Settings(provider="azure", azure_resource="x"), ""),
        (Settings(provider="custom"), API_KEY),
        (Settings(provider="custom", base_url="ftp://x/v1"), API_KEY),
        (Settings(provider="token_url"), None),
        (Settings(provider="token_url", token_url="not a url"), None),
        (Settings(provider="local"), None),
        (Settings(provider="martian"), API_KEY),
    ],
)
def test_incomplete_settings_are_config_errors(settings: Settings, key: str | None) -> None:
    with pytest.raises(ConfigError):
        make_provider(settings, key)


def test_ephemeral_key_never_shows_its_value() -> None:
    key = EphemeralKey("ek_secret_value_0123456789", 123.0)
    assert "ek_secret_value_0123456789" not in repr(key)
    assert "ek_secret_value_0123456789" not in str(key)
    assert "123.0" in repr(key)
    assert "ek_secret_value_0123456789" not in redact(f"got {key.value}")


def test_api_key_is_registered_for_redaction() -> None:
    odd_key = "plainkeywithoutprefix987654"
    BearerProvider("x", "http://127.0.0.1/v1", odd_key, "m")
    assert odd_key not in redact(f"header {odd_key}")
