"""Headless self-test: one line per check, then PASS or FAIL.

Checks are named "module:function" and imported only when they run, so a broken
part fails its own line instead of the whole command. A check returns a short
detail string or raises. The list of checks lives in main.py, the one module that
knows the client, the window and the server.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TextIO

from base.logs import redact


def check_runtime() -> str:
    import aiohttp
    import aiortc
    import av
    import numpy

    return f"aiortc {aiortc.__version__}, av {av.__version__}, aiohttp {aiohttp.__version__}, numpy {numpy.__version__}"


def check_portaudio() -> str:
    import sounddevice

    return f"PortAudio {sounddevice.get_portaudio_version()[1]}"


def _resolve(target: str | Callable[[], str]) -> Callable[[], str]:
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run(checks: Sequence[tuple[str, str | Callable[[], str]]], out: TextIO, *, verbose: bool = False) -> bool:
    ok = True
    for label, target in checks:
        started = time.monotonic()
        try:
            detail = _resolve(target)()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is one FAIL line, not a crash
            ok = False
            status = "FAIL"
            detail = f"{type(exc).__name__}: {exc}"
            if verbose:
                detail += "\n" + traceback.format_exc()
        elapsed = (time.monotonic() - started) * 1000
        out.write(redact(f"[{status:>4}] {label} ({elapsed:.0f} ms): {detail}") + "\n")
        out.flush()
    out.write("PASS\n" if ok else "FAIL\n")
    return ok
