"""Usage and cost: from a provider's response.done to the window's line and the metrics receiver.

A scripted provider (a real aiortc peer) sends OpenAI-shaped `response.done` events that
carry `usage`; the real engine sums them and prices them, the window shows the line, and
the latency batch carries them to a real metrics receiver, which exposes them.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from core.call.engine import CallEngine
from core.call.events import UsageUpdated
from core.call.state import Phase
from core.usage import DEFAULT_PRICES, Usage
from gui.app import application, build_window
from rig.engine_helpers import Recorder, custom_settings, engine_options, tone_audio
from rig.hostile_server import HostileServer
from server.metrics.app import ReceiverConfig, start_receiver

USAGE = {"total_tokens": 1600, "input_tokens": 1200, "output_tokens": 400,
         "input_token_details": {"text_tokens": 200, "audio_tokens": 1000, "cached_tokens": 100,
                                 "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 0}},
         "output_token_details": {"text_tokens": 100, "audio_tokens": 300}}


def _done(n: int) -> dict:
    return {"type": "response.done", "event_id": f"e{n}",
            "response": {"id": f"resp_{n}", "object": "realtime.response", "status": "completed", "output": [],
                         "usage": USAGE}}


def test_the_price_table_prices_each_kind_of_token():
    usage = Usage("gpt-realtime")
    usage.add(USAGE)
    price = DEFAULT_PRICES["gpt-realtime"]
    expected = (100 * price["text_input"] + 100 * price["cached_text_input"] + 1000 * price["audio_input"]
                + 100 * price["text_output"] + 300 * price["audio_output"]) / 1e6
    assert usage.cost_usd == pytest.approx(expected)
    assert usage.tokens["input_audio_tokens"] == 1000 and usage.tokens["cached_tokens"] == 100
    assert Usage("some-custom-model").cost_usd is None  # no price: no guessed cost


async def test_usage_reaches_the_window_and_the_metrics_receiver(tmp_path, private_home, qtbot):
    application()
    receiver = await start_receiver(ReceiverConfig(db_path=tmp_path / "m.sqlite3", port=0))
    try:
        async with HostileServer() as provider:
            settings = custom_settings(provider.base_url, model="gpt-realtime",
                                       metrics_url=f"{receiver.url}/api/sandra/metrics")
            engine = CallEngine(settings, audio=tone_audio(tmp_path), api_key=provider.api_key,
                                options=engine_options())
            window = build_window(settings, engine=engine)
            qtbot.addWidget(window)
            recorder = Recorder(engine)
            try:
                await engine.start()
                peer = await provider.next_peer(15)
                await recorder.wait_phase(Phase.CONNECTED, 15)
                for n in range(2):
                    peer.send(_done(n))
                update = await recorder.wait_for(
                    lambda e: isinstance(e, UsageUpdated) and e.tokens["input_tokens"] == 2400, 10)
                assert update.cost_usd is not None and update.cost_usd > 0
                await asyncio.sleep(0.1)  # the bridge's queued signal
                assert "2,400 tokens in" in window.usage_line.text() and "$" in window.usage_line.text()
                for _ in range(10):  # a latency batch goes out every 10 measurements, usage with it
                    engine.telemetry.record("response_latency", 250.0)
                async with aiohttp.ClientSession() as http:
                    for _ in range(50):
                        async with http.get(f"{receiver.url}/metrics") as response:
                            exposition = await response.text()
                        if 'sandra_tokens_total{kind="input"} 2400.0' in exposition:
                            break
                        await asyncio.sleep(0.1)
                assert 'sandra_tokens_total{kind="input"} 2400.0' in exposition, exposition[-1500:]
                assert "sandra_cost_usd_total" in exposition
            finally:
                await engine.close()
                window.allow_close()
                window.close()
    finally:
        await receiver.close()
