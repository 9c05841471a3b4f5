"""The built-in tools: the time, a calculator, timers that ring, and opening a web page.

Names match what the local server knows (`get_time`, `calculate`, `set_timer`), so the
offline assistant can call them too.
"""

from __future__ import annotations

import ast
import asyncio
import itertools
import logging
import math
import operator
import os
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.tools.registry import Tool, ToolFailure

log = logging.getLogger(__name__)

# -- the time -----------------------------------------------------------------


def local_zone_name() -> str | None:
    """The IANA name of the local time zone (e.g. "Europe/Paris"), if the system says it.

    $TZ first, then the /etc/localtime link (Linux and macOS); None elsewhere (Windows),
    where the offset and abbreviation still tell the time.
    """
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        if not name:
            continue
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return None


def get_time() -> dict[str, str]:
    now = datetime.now().astimezone()
    result = {
        "local_time": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "utc_offset": now.strftime("%z")[:3] + ":" + now.strftime("%z")[3:],
        "time_zone_abbreviation": now.tzname() or "",
    }
    zone = local_zone_name()
    if zone is not None:
        result["time_zone"] = zone
    return result


# -- the calculator -----------------------------------------------------------

MAX_EXPRESSION_CHARS = 200
MAX_RESULT_BITS = 1024  # about 308 decimal digits; anything bigger is not a spoken answer
MAX_EXPONENT = 1000
SIGNIFICANT_DIGITS = 12  # what the assistant says; hides 0.1 + 0.2 = 0.30000000000000004

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# What the model or a user may write for the same operators.
_SPELLINGS = str.maketrans({"×": "*", "÷": "/", "−": "-", "^": "**"})


def _check_size(value: int | float) -> int | float:
    too_big_int = isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS
    # Float products overflow to inf silently, without OverflowError.
    if too_big_int or (isinstance(value, float) and not math.isfinite(value)):
        raise ToolFailure("The result is too large.")
    return value


def _power(base: int | float, exponent: int | float) -> int | float:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolFailure(f"Exponents are limited to ±{MAX_EXPONENT}.")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        # Refuse before computing: 9**1000 ** 1000 would take the CPU for minutes.
        if base.bit_length() * exponent > MAX_RESULT_BITS * 2:
            raise ToolFailure("The result is too large.")
    result = base**exponent
    if isinstance(result, complex):
        raise ToolFailure("The result is not a real number.")
    return result


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        return _check_size(_BINARY[type(node.op)](left, right))
    raise ToolFailure("Only numbers, + - * / % ** and parentheses are allowed.")


def calculate(expression: str) -> dict[str, Any]:
    """Evaluate arithmetic without eval(): only the AST nodes of numbers and six operators."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolFailure(f"The expression is longer than {MAX_EXPRESSION_CHARS} characters.")
    text = expression.translate(_SPELLINGS)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ToolFailure(f"{expression!r} is not an arithmetic expression.") from None
    try:
        value = _evaluate(tree)
    except ZeroDivisionError:
        raise ToolFailure("Division by zero.") from None
    except OverflowError:
        raise ToolFailure("The result is too large.") from None
    if isinstance(value, float):
        value = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
        if value.is_integer() and abs(value) < 2**53:
            value = int(value)
    return {"expression": expression, "result": value}


# -- timers ---------------------------------------------------------------------

MIN_TIMER_S = 1.0
MAX_TIMER_S = 24 * 3600.0


@dataclass
class Timers:
    """Timers on the running loop; `on_ring(label)` is the app's sound and notification."""

    on_ring: Callable[[str], None]
    _handles: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def set_timer(self, seconds: float, label: str = "") -> dict[str, Any]:
        if not isinstance(seconds, int | float) or not MIN_TIMER_S <= seconds <= MAX_TIMER_S:
            raise ToolFailure(f"A timer lasts from {MIN_TIMER_S:g} second to {MAX_TIMER_S / 3600:g} hours.")
        timer_id = next(self._ids)
        self._handles[timer_id] = asyncio.get_running_loop().call_later(seconds, self._ring, timer_id, label)
        due = datetime.now().astimezone() + timedelta(seconds=seconds)
        return {"timer_id": timer_id, "label": label, "seconds": seconds, "rings_at": due.isoformat(timespec="seconds")}

    def _ring(self, timer_id: int, label: str) -> None:
        self._handles.pop(timer_id, None)
        try:
            self.on_ring(label)
        except Exception:
            log.exception("ringing timer %d failed", timer_id)

    def pending(self) -> int:
        return len(self._handles)

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()


# -- web pages --------------------------------------------------------------------


def open_url(url: str, opener: Callable[[str], bool] = webbrowser.open) -> dict[str, str]:
    """Open an http(s) page in the user's browser (blocking: the registry runs it on a thread)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolFailure("Only http and https addresses can be opened.")
    if not opener(parts.geturl()):
        raise ToolFailure("No web browser could be started.")
    return {"opened": parts.geturl()}


# -- the set ------------------------------------------------------------------------


def _arguments(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of an arguments object: these properties, no others."""
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def builtin_tools(timers: Timers, opener: Callable[[str], bool] = webbrowser.open) -> list[Tool]:
    """The built-in tools; `opener` is the browser (a test passes a recorder)."""

    def open_page(url: str) -> dict[str, str]:
        return open_url(url, opener)

    return [
        Tool(
            name="get_time",
            description="The current local date, time, weekday and time zone of the user.",
            parameters=_arguments([]),
            handler=get_time,
        ),
        Tool(
            name="calculate",
            description="Evaluate an arithmetic expression exactly: numbers, + - * / % ** and parentheses.",
            parameters=_arguments(["expression"], expression={"type": "string", "description": "e.g. (17 + 4) * 3 / 7"}),
            handler=calculate,
        ),
        Tool(
            name="set_timer",
            description="Start a timer that rings (a sound and a desktop notification) when it is due.",
            parameters=_arguments(
                ["seconds"],
                seconds={"type": "number", "minimum": MIN_TIMER_S, "maximum": MAX_TIMER_S},
                label={"type": "string", "description": "what the timer is for, shown when it rings"},
            ),
            handler=timers.set_timer,
        ),
        Tool(
            name="open_url",
            description="Open a web page (http or https) in the user's browser. The user is asked first.",
            parameters=_arguments(["url"], url={"type": "string", "description": "the full http(s) address"}),
            handler=open_page,
            side_effect=True,
        ),
    ]
