"""Per-add cost of BoundedHistory next to the seed's way: `python -m bench.history [--quick]`.

Both keep the last 50 messages under a 100 MB budget. The seed re-serialised the
whole list on every add to measure its size (JSON.stringify(history).length);
BoundedHistory serialises only the new message and keeps a running total. Each run
adds 20,000 messages of 1 KB to a fresh history of each kind, in the same process,
alternating the two so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.figures import Figures, figure
from core.history import BoundedHistory

ADDS = 20_000
MESSAGE_CHARS = 1024
MAX_MESSAGES = 50
MAX_BYTES = 100 * 1024 * 1024
TRIM_TO = 30


class SeedStyleHistory:
    """The seed's addToConversationHistory, line for line, as the baseline."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []

    def add(self, role: str, content: str) -> None:
        self.history.append({"role": role, "content": content, "timestamp": time.time()})
        if len(self.history) > MAX_MESSAGES:
            self.history.pop(0)
        if len(json.dumps(self.history, ensure_ascii=False)) > MAX_BYTES:
            self.history = self.history[-TRIM_TO:]


def _contents() -> list[str]:
    # A small pool of distinct 1 KB texts, made before timing so generating them is not measured.
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits + " .,"
    return ["".join(rng.choices(alphabet, k=MESSAGE_CHARS)) for _ in range(64)]


def _time_adds(add: Callable[[str, str], None], contents: list[str]) -> float:
    """Microseconds per add over ADDS adds."""
    roles = ("user", "assistant")
    pool = len(contents)
    started = time.perf_counter()
    for i in range(ADDS):
        add(roles[i & 1], contents[i % pool])
    return (time.perf_counter() - started) / ADDS * 1e6


def run(quick: bool = False) -> Figures:
    """Median/min/max µs per add for both histories; `quick` does fewer runs, same size."""
    runs = 3 if quick else 7
    contents = _contents()
    ours: list[float] = []
    seed: list[float] = []
    for _ in range(runs):
        ours.append(_time_adds(BoundedHistory(MAX_MESSAGES, MAX_BYTES, TRIM_TO).add, contents))
        seed.append(_time_adds(SeedStyleHistory().add, contents))
    return {"history_add_us": figure(ours), "history_add_us_seed_style": figure(seed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    args = parser.parse_args(argv)
    figures = run(args.quick)
    print(f"history add, {ADDS} adds of {MESSAGE_CHARS} B messages (limit {MAX_MESSAGES} messages), µs per add:")
    for name, label in (("history_add_us", "BoundedHistory"), ("history_add_us_seed_style", "seed-style list")):
        f = figures[name]
        print(f"  {label:<16} median {f['value']:8.2f}  min {f['min']:8.2f}  max {f['max']:8.2f}  ({f['runs']} runs)")
    ratio = figures["history_add_us_seed_style"]["value"] / figures["history_add_us"]["value"]
    print(f"  the seed's way costs {ratio:.0f}x as much per add")
    return 0


if __name__ == "__main__":
    sys.exit(main())
