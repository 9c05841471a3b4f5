"""Token usage of a call, summed from each response.done, and its estimated cost.

Pure: usage dicts in (OpenAI's `response.usage` shape), totals and dollars out. Prices
are per million tokens, by model, from a table the user can edit (`prices.json` in
the config dir); a model without a price has no cost, not a guessed one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("input_tokens", "output_tokens", "input_text_tokens", "input_audio_tokens", "output_text_tokens",
         "output_audio_tokens", "cached_tokens")
PRICE_KEYS = ("text_input", "cached_text_input", "text_output", "audio_input", "cached_audio_input", "audio_output")
# US$ per 1M tokens (OpenAI's published realtime prices, 2025-08); Azure bills alike.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-realtime": {"text_input": 4.0, "cached_text_input": 0.4, "text_output": 16.0,
                     "audio_input": 32.0, "cached_audio_input": 0.4, "audio_output": 64.0},
    "gpt-realtime-mini": {"text_input": 0.6, "cached_text_input": 0.06, "text_output": 2.4,
                          "audio_input": 10.0, "cached_audio_input": 0.3, "audio_output": 20.0},
}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def flatten(usage: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI's nested usage → the flat counts the metrics batch carries."""
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    inp = inp if isinstance(inp, Mapping) else {}
    out = out if isinstance(out, Mapping) else {}
    return {
        "input_tokens": _int(usage.get("input_tokens")), "output_tokens": _int(usage.get("output_tokens")),
        "input_text_tokens": _int(inp.get("text_tokens")), "input_audio_tokens": _int(inp.get("audio_tokens")),
        "output_text_tokens": _int(out.get("text_tokens")), "output_audio_tokens": _int(out.get("audio_tokens")),
        "cached_tokens": _int(inp.get("cached_tokens")),
    }


def _cached_split(usage: Mapping[str, Any]) -> tuple[int, int]:
    details = (usage.get("input_token_details") or {}).get("cached_tokens_details") or {}
    return (_int(details.get("text_tokens")), _int(details.get("audio_tokens"))) if isinstance(details, Mapping) else (0, 0)


@dataclass
class Usage:
    model: str
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: DEFAULT_PRICES)
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    _cost: float = 0.0

    def add(self, usage: Mapping[str, Any]) -> None:
        flat = flatten(usage)
        for kind, count in flat.items():
            self.tokens[kind] += count
        price = self.prices.get(self.model)
        if price is None:
            return
        cached_text, cached_audio = _cached_split(usage)
        per = 1e-6
        self._cost += per * (
            (flat["input_text_tokens"] - cached_text) * price["text_input"]
            + cached_text * price["cached_text_input"]
            + (flat["input_audio_tokens"] - cached_audio) * price["audio_input"]
            + cached_audio * price["cached_audio_input"]
            + flat["output_text_tokens"] * price["text_output"]
            + flat["output_audio_tokens"] * price["audio_output"])

    @property
    def cost_usd(self) -> float | None:
        return round(self._cost, 6) if self.model in self.prices else None

    def to_json(self) -> dict[str, Any]:
        """The metrics batch's `usage` object."""
        return {**self.tokens, "cost_usd": self.cost_usd}


def load_prices(path: Path) -> dict[str, dict[str, float]]:
    """The user's price table (written with the defaults on first use); defaults if unusable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(DEFAULT_PRICES, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write the price table %s: %s", path, exc)
        return DEFAULT_PRICES
    except (OSError, ValueError) as exc:
        log.warning("the price table %s is not usable (%s); using the built-in prices", path, exc)
        return DEFAULT_PRICES
    good = {model: {k: float(v) for k, v in row.items()} for model, row in data.items()
            if isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) for k in PRICE_KEYS)} \
        if isinstance(data, dict) else {}
    if len(good) != (len(data) if isinstance(data, dict) else -1):
        log.warning("some rows of the price table %s were not usable and are ignored", path)
    return good
