"""The reconnection schedule as the engine really runs it."""

from __future__ import annotations

import time

import pytest

from core.backoff import ReconnectPolicy
from core.call.state import Phase
from core.call.engine import CallEngine
from core.call.events import Problem
from rig.engine_helpers import Recorder, closed_port, custom_settings, engine_options, tone_audio
from rig.fake_openai import FakeOpenAI, error_body
from rig.hostile_server import HostileServer

pytestmark = pytest.mark.timeout(120)


async def test_unreachable_provider_gets_five_attempts_at_1_2_4_8_16_then_ends(tmp_path, private_home):
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:  # the fake clock: record, don't wait
        slept.append(seconds)

    settings = custom_settings(f"http://127.0.0.1:{closed_port()}/v1")
    engine = CallEngine(settings, audio=tone_audio(tmp_path), api_key="test-key-0000", options=engine_options(), sleep=fake_sleep)
    recorder = Recorder(engine)
    await engine.start()
    ended = await recorder.wait_phase(Phase.ENDED, timeout=60)
    await engine.close()

    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0]
    reconnecting = [s for s in recorder.states() if s.phase is Phase.RECONNECTING]
    assert [(s.attempt, s.max_attempts, s.delay) for s in reconnecting] == [
        (1, 5, 1.0), (2, 5, 2.0), (3, 5, 4.0), (4, 5, 8.0), (5, 5, 16.0)]
    assert recorder.phases().count(Phase.CONNECTING) == 6  # the first try and five more
    assert "5 attempts" in ended.state.reason and "Reconnect" in ended.state.reason
    assert any(isinstance(e, Problem) and e.fatal for e in recorder.events)


async def test_hang_up_during_backoff_cancels_the_timer(tmp_path, private_home):
    settings = custom_settings(f"http://127.0.0.1:{closed_port()}/v1")
    engine = CallEngine(settings, audio=tone_audio(tmp_path), api_key="test-key-0000", options=engine_options(),
                        policy=ReconnectPolicy(base=30.0, cap=30.0))
    recorder = Recorder(engine)
    await engine.start()
    await recorder.wait_phase(Phase.RECONNECTING, timeout=10)
    started = time.monotonic()
    await engine.hang_up()
    assert time.monotonic() - started < 2, "hang-up waited for the backoff timer"
    assert engine.state.phase is Phase.ENDED and engine.state.reason == "You hung up."
    await engine.close()
    assert recorder.phases().count(Phase.CONNECTING) == 1


async def test_missing_api_key_ends_at_once_with_advice(tmp_path, private_home, monkeypatch):
    monkeypatch.delenv("SANDRA_API_KEY", raising=False)
    engine = CallEngine(custom_settings("", provider="openai"), audio=tone_audio(tmp_path), options=engine_options())
    recorder = Recorder(engine)
    await engine.start()
    ended = await recorder.wait_phase(Phase.ENDED, timeout=10)
    await engine.close()
    assert "API key" in ended.state.reason
    assert Phase.RECONNECTING not in recorder.phases()


async def test_a_provider_that_accepts_and_drops_at_once_ends_after_five_attempts(tmp_path, private_home):
    """A connection that never proves itself (10 s up, or a completed turn) does not reset
    the budget, so accept-then-drop cannot make the call reconnect forever."""
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async with HostileServer() as provider:
        engine = CallEngine(custom_settings(provider.base_url), audio=tone_audio(tmp_path), api_key=provider.api_key,
                            options=engine_options(), sleep=fake_sleep)
        recorder = Recorder(engine)
        await engine.start()
        for n in range(6):  # the first connection and five reconnects: each accepted, then dropped
            peer = await provider.next_peer(20, after=n)
            await recorder.wait_for(lambda _e: recorder.phases().count(Phase.CONNECTED) > n, 20)
            await peer.close()
        ended = await recorder.wait_phase(Phase.ENDED, timeout=30)
        await engine.close()
    assert recorder.phases().count(Phase.CONNECTED) == 6
    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert "5 attempts" in ended.state.reason


async def test_a_provider_out_of_credit_ends_the_call_at_once_with_what_to_do(tmp_path, private_home):
    async with FakeOpenAI() as provider:
        provider.queue("client_secrets", 429, error_body(
            "You exceeded your current quota, please check your plan and billing details.",
            type_="insufficient_quota", code="insufficient_quota"))
        engine = CallEngine(custom_settings(provider.base_url), audio=tone_audio(tmp_path), api_key=provider.api_key,
                            options=engine_options())
        recorder = Recorder(engine)
        await engine.start()
        ended = await recorder.wait_phase(Phase.ENDED, timeout=10)
        await engine.close()
        assert len(provider.of("client_secrets")) == 1  # no retry: it cannot buy credit
    assert Phase.RECONNECTING not in recorder.phases()
    assert "no credit left" in ended.state.reason and "billing" in ended.state.reason
    assert any(isinstance(e, Problem) and e.fatal and "credit" in e.message for e in recorder.events)
