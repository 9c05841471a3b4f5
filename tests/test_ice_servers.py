"""ICE plan and STUN probing, against fake STUN responders on 127.0.0.1 only."""

from __future__ import annotations

import logging
import time

import pytest
from aioice import stun
from aiortc import RTCBundlePolicy
from aiortc.rtcicetransport import connection_kwargs

from base.errors import ConfigError
from core.ice_servers import (
    DEFAULT_STUN_URLS,
    IcePlan,
    TurnServer,
    parse_stun_url,
    probe_stun,
    resolve_turn,
)
from base.logs import redact
from fake_stun import FakeStunServer, binding_success

TURN = TurnServer(host="turn.example.test", username="alice", password="s3cret-turn-pass")


# --- probing -------------------------------------------------------------------------


async def test_picks_the_one_that_answers_among_silent_ones() -> None:
    # The good one answers after 0.2 s, so all three have surely been asked by then.
    async with FakeStunServer(respond=False) as a, FakeStunServer(respond=False) as b, \
            FakeStunServer(delay=0.2) as good:
        started = time.monotonic()
        chosen = await probe_stun([a.url, b.url, good.url], timeout=1.0)
        elapsed = time.monotonic() - started
    assert chosen == good.url
    # Asked at once, not one after another: one after another, the two silent ones would
    # cost the whole 1 s timeout each. 1.5 s is the bound, with room for a slow start.
    assert elapsed < 1.5
    assert a.requests >= 1 and b.requests >= 1


async def test_first_to_answer_wins_not_first_in_the_list() -> None:
    async with FakeStunServer(delay=0.4) as slow, FakeStunServer(delay=0.05) as fast:
        assert await probe_stun([slow.url, fast.url], timeout=1.0) == fast.url


async def test_all_silent_gives_none_after_the_timeout_with_retransmissions() -> None:
    async with FakeStunServer(respond=False) as a, FakeStunServer(respond=False) as b:
        started = time.monotonic()
        chosen = await probe_stun([a.url, b.url], timeout=0.8)
        elapsed = time.monotonic() - started
    assert chosen is None
    assert 0.75 <= elapsed < 1.3
    # A lost datagram is retried, not taken as silence.
    assert a.requests >= 2 and b.requests >= 2


def _wrong_transaction(request: stun.Message, addr: tuple[str, int]) -> bytes:
    other = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    return binding_success(other, addr)


def _error_class(request: stun.Message, addr: tuple[str, int]) -> bytes:
    reply = stun.Message(stun.Method.BINDING, stun.Class.ERROR, transaction_id=request.transaction_id)
    reply.attributes["ERROR-CODE"] = (400, "Bad Request")
    return bytes(reply)


def _no_address(request: stun.Message, addr: tuple[str, int]) -> bytes:
    return bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id))


def _truncated(request: stun.Message, addr: tuple[str, int]) -> bytes:
    return binding_success(request, addr)[:-3]


def _garbage(request: stun.Message, addr: tuple[str, int]) -> bytes:
    return b"\x01\x01\x00\x08" + b"\xff" * 30


@pytest.mark.parametrize("reply", [_wrong_transaction, _error_class, _no_address, _truncated, _garbage])
async def test_malformed_or_wrong_replies_are_not_answers(reply) -> None:
    async with FakeStunServer(reply=reply) as bad:
        assert await probe_stun([bad.url], timeout=0.4) is None
        assert bad.requests >= 1


async def test_malformed_replies_do_not_hide_a_good_server() -> None:
    async with FakeStunServer(reply=_garbage) as bad, FakeStunServer(reply=_wrong_transaction) as wrong, \
            FakeStunServer(delay=0.1) as good:
        assert await probe_stun([bad.url, wrong.url, good.url], timeout=1.0) == good.url


async def test_bad_urls_count_as_silent() -> None:
    async with FakeStunServer() as good:
        localhost = good.url.replace("127.0.0.1", "localhost")
        assert await probe_stun(["turn:127.0.0.1:1", "stun:127.0.0.1:99999", "nonsense", localhost], 1.0) == localhost
    assert await probe_stun([], timeout=1.0) is None


def test_parse_stun_url() -> None:
    assert parse_stun_url("stun:stun.example.test:19302") == ("stun.example.test", 19302)
    assert parse_stun_url("stun:10.0.0.1") == ("10.0.0.1", 3478)
    for bad in ("stuns:x:1", "stun:", "stun:x:0", "http://x", "stun:a b"):
        with pytest.raises(ValueError):
            parse_stun_url(bad)


def test_default_list_is_the_seeds_seven_in_order() -> None:
    # Names are compared, never contacted: tests reach only fake servers on 127.0.0.1.
    hosts = [parse_stun_url(url)[0] for url in DEFAULT_STUN_URLS]
    assert len(hosts) == 7 and len(set(hosts)) == 7
    assert hosts[0].startswith("stun.l.") and hosts[-1] == "stun.stunprotocol.org"


# --- the plan ------------------------------------------------------------------------


def _urls(config) -> list[str]:
    return [server.urls for server in config.iceServers]


def test_first_attempt_uses_the_probed_stun_only() -> None:
    plan = IcePlan(turn=TURN)
    config = plan.configuration(0, "stun:127.0.0.1:4000")
    assert _urls(config) == ["stun:127.0.0.1:4000"]
    assert config.bundlePolicy is RTCBundlePolicy.MAX_BUNDLE


def test_turn_transports_follow_failed_attempts_udp_tcp_tls() -> None:
    plan = IcePlan(turn=TURN)
    expected = {
        1: "turn:turn.example.test:3478?transport=udp",
        2: "turn:turn.example.test:3478?transport=tcp",
        3: "turns:turn.example.test:5349?transport=tcp",
        7: "turns:turn.example.test:5349?transport=tcp",
    }
    for failed, turn_url in expected.items():
        config = plan.configuration(failed, "stun:127.0.0.1:4000")
        assert _urls(config) == ["stun:127.0.0.1:4000", turn_url]
        assert (config.iceServers[1].username, config.iceServers[1].credential) == ("alice", "s3cret-turn-pass")


def test_aiortc_really_receives_the_chosen_servers() -> None:
    # What aioice is handed is decided by aiortc's own parser: check through it.
    plan = IcePlan(turn=TURN)
    kwargs = connection_kwargs(plan.configuration(3, "stun:127.0.0.1:4000").iceServers)
    assert kwargs["stun_server"] == ("127.0.0.1", 4000)
    assert kwargs["turn_server"] == ("turn.example.test", 5349)
    assert kwargs["turn_ssl"] is True and kwargs["turn_transport"] == "tcp"
    kwargs = connection_kwargs(plan.configuration(1, None).iceServers)
    assert "stun_server" not in kwargs
    assert kwargs["turn_transport"] == "udp" and kwargs["turn_ssl"] is False


def test_no_turn_means_stun_only_every_attempt_and_none_when_nothing_answered() -> None:
    plan = IcePlan()
    for failed in range(5):
        assert _urls(plan.configuration(failed, "stun:127.0.0.1:4000")) == ["stun:127.0.0.1:4000"]
    assert plan.configuration(0, None).iceServers == []


def test_loopback_provider_gets_no_servers_and_no_probe() -> None:
    plan = IcePlan(turn=TURN, loopback=True)
    assert not plan.needs_probe
    for failed in range(4):
        config = plan.configuration(failed, "stun:127.0.0.1:4000")
        assert config.iceServers == []
        assert config.bundlePolicy is RTCBundlePolicy.MAX_BUNDLE
    assert IcePlan().needs_probe
    assert not IcePlan(stun_urls=()).needs_probe


def test_negative_attempts_are_a_bug() -> None:
    with pytest.raises(ValueError):
        IcePlan().configuration(-1, None)


def test_describe_never_names_the_password() -> None:
    plan = IcePlan(turn=TURN)
    text = plan.describe(2, "stun:127.0.0.1:4000")
    assert "transport=tcp" in text and "stun:127.0.0.1:4000" in text
    assert "s3cret" not in text
    assert "loopback" in IcePlan(loopback=True).describe(0, None)


# --- TURN settings -------------------------------------------------------------------


def test_turn_password_hidden_from_repr_and_logs() -> None:
    turn = TurnServer(host="turn.example.test", username="bob", password="another-turn-secret")
    assert "another-turn-secret" not in repr(turn)
    assert "another-turn-secret" not in repr(IcePlan(turn=turn))
    # RTCIceServer's own repr shows the credential; the log filter must catch it.
    config = IcePlan(turn=turn).configuration(1, None)
    assert "another-turn-secret" in repr(config)
    assert "another-turn-secret" not in redact(f"config {config}")


def test_resolve_turn_environment_wins_over_settings() -> None:
    env = {"SANDRA_TURN_SERVER": "env.turn.test", "SANDRA_TURN_USERNAME": "envuser", "SANDRA_TURN_PASSWORD": "envpass123"}
    turn = resolve_turn(env, "settings.turn.test", "setuser", "setpass123")
    assert turn == TurnServer("env.turn.test", "envuser", "envpass123")
    turn = resolve_turn({}, "settings.turn.test", "setuser", "setpass123")
    assert turn == TurnServer("settings.turn.test", "setuser", "setpass123")
    # A password only in the environment completes the settings' server (keyring-less machines).
    turn = resolve_turn({"SANDRA_TURN_PASSWORD": "envpass123"}, "settings.turn.test", "setuser", None)
    assert turn is not None and turn.password == "envpass123"
    assert resolve_turn({}, None, "u", "p") is None
    assert resolve_turn({}, "  ", "u", "p") is None


@pytest.mark.parametrize(
    "host,user,password",
    [("turn:x.test", "u", "pppppp"), ("x.test:3478", "u", "pppppp"), ("x.test", "", "pppppp"), ("x.test", "u", "")],
)
def test_bad_turn_settings_are_a_config_error(host: str, user: str, password: str) -> None:
    with pytest.raises(ConfigError):
        resolve_turn({}, host, user, password)


def test_probe_logs_the_choice(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    async def run() -> str | None:
        async with FakeStunServer() as good:
            return await probe_stun([good.url], timeout=0.5)

    with caplog.at_level(logging.INFO, logger="core.ice_servers"):
        chosen = asyncio.run(run())
    assert chosen and any(chosen in r.getMessage() for r in caplog.records)
