"""Sample call for screenshots and the self-test: no network, no engine.

It drives the window through the same EngineBridge the engine uses, with a real
LatencyTracker, so the plot and its p95/p99 lines show what they would in a call.
"""

from __future__ import annotations

import random

from core.call.state import CallState, Phase
from core.call.events import (InputLevel, LatencyMeasured, StateChanged, ToolActivity, TranscriptDelta,
                              UsageUpdated)
from core.telemetry import LatencyTracker
from gui.engine_bridge import EngineBridge

PROVIDER = ("Local (offline)", "sandra-local")

CONVERSATION: list[tuple[str, str]] = [
    ("user", "Hi Sandra, what time is it?"),
    ("assistant", "It's a quarter past ten in the morning."),
    ("user", "What's three times two?"),
    ("assistant", "Three times two is six."),
    ("user", "Set a timer for two minutes."),
    ("tool", ""),  # the model calls set_timer: a collapsed tool bubble
    ("assistant", "Your timer for two minutes is set."),
    ("user", "And what did I ask you first?"),
    ("assistant", "You first asked me what time it is."),
]
TIMER_CALL = ToolActivity("demo-call", "set_timer", '{"seconds": 120, "label": "timer"}',
                          '{"timer_id": 1, "label": "timer", "seconds": 120}')
# What a paid provider would report for a call like this one (the local server reports none).
USAGE = UsageUpdated({"input_tokens": 5120, "output_tokens": 1830, "input_text_tokens": 940,
                      "input_audio_tokens": 4180, "output_text_tokens": 410, "output_audio_tokens": 1420,
                      "cached_tokens": 2304}, 0.2231)
LATENCY_POINTS = 48


def demo_tracker() -> LatencyTracker:
    return LatencyTracker("demo", batch_size=10_000)


def play(bridge: EngineBridge, tracker: LatencyTracker, seed: int = 7) -> None:
    """Feed a connected call, the sample conversation and latency points into the window."""
    bridge.feed(StateChanged(CallState(Phase.CONNECTING)))
    bridge.feed(StateChanged(CallState(Phase.CONNECTED)))
    for index, (role, text) in enumerate(CONVERSATION):
        if role == "tool":
            bridge.feed(TIMER_CALL)
            continue
        turn = f"demo-{index}"
        # Stream the words as deltas, then the final text, as a real turn arrives.
        for word in text.split(" "):
            bridge.feed(TranscriptDelta(role, word + " ", False, turn))  # type: ignore[arg-type]
        bridge.feed(TranscriptDelta(role, text, True, turn))  # type: ignore[arg-type]
    rng = random.Random(seed)
    for _ in range(LATENCY_POINTS):
        # Mostly quick answers with an occasional slow one, like a real call.
        ms = rng.gauss(420, 70) if rng.random() > 0.08 else rng.uniform(750, 1000)
        ms = max(120.0, ms)
        tracker.record("response_latency", ms)  # the engine records before it emits
        bridge.feed(LatencyMeasured("response_latency", ms))
    bridge.feed(InputLevel(-17.0))
    bridge.feed(USAGE)
