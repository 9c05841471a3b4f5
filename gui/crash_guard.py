"""No silent death: an exception nobody caught is logged and shown in the window's banner.

Three places can lose one: a Qt slot (PySide6 hands it to sys.excepthook and goes
on), an asyncio task or callback (the loop's exception handler), and a thread such as
PortAudio's callback (threading.excepthook). Each is logged with its traceback to the
log file and told to the user in one line; the app keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

Show = Callable[[str], None]


def _tell(show: Show, where: str, exc: BaseException | None) -> None:
    what = f"{type(exc).__name__}: {exc}" if exc is not None else "an unknown error"
    try:
        show(f"Something went wrong {where} ({what[:200]}). Sandra goes on; the log has the details.")
    except Exception:  # the banner itself failing must not recurse
        log.exception("could not show an unexpected error")


def install(show: Show, loop: asyncio.AbstractEventLoop) -> None:
    """Route every uncaught exception to the log and to `show` (called on the loop's thread)."""

    def on_exception(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        log.error("uncaught exception in the window", exc_info=(kind, exc, tb))
        _tell(show, "in the window", exc)

    def on_loop_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        log.error("uncaught exception in a task: %s", context.get("message"), exc_info=exc)
        _tell(show, "in the background", exc)

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        log.error("uncaught exception in thread %s", args.thread.name if args.thread else "?",
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        loop.call_soon_threadsafe(_tell, show, "in a sound or worker thread", args.exc_value)

    sys.excepthook = on_exception
    loop.set_exception_handler(on_loop_exception)
    threading.excepthook = on_thread_exception
