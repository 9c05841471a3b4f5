"""Logging set-up: a rotating file in the user log dir, console level from --verbose,
and a filter that keeps secrets out of every line.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path

from base import paths

# Bearer tokens, API keys (sk-…), ephemeral keys (ek_…) and Authorization header values.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",}]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"()\b(sk|ek|rk)[-_][A-Za-z0-9_-]{8,}"),
]
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make sure this exact value never appears in a log line (API and server keys)."""
    if value and len(value) >= 6:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    for secret in _extra_secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}[redacted]", text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: int = 0, *, log_file: str = "sandra.log", console: bool = True) -> Path | None:
    """Configure the root logger once per process; returns the log file's path."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    # No lower than the most talkative handler: a record nobody writes costs a LogRecord all
    # the same (qasync alone logs ~250 DEBUG lines a second during a call).
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    redactor = RedactingFilter()
    path: Path | None = None
    try:
        path = paths.log_dir() / log_file
        file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=5, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        file_handler.addFilter(redactor)
        root.addHandler(file_handler)
    except OSError as exc:  # a read-only home must not stop the app
        print(f"sandra: cannot write the log file ({exc}); logging to the console only", file=sys.stderr)
        path = None
    if console:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
        console_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        console_handler.addFilter(redactor)
        root.addHandler(console_handler)
    # Third-party chatter stays out of the user's console unless asked for.
    for noisy in ("aioice", "aiortc", "aiohttp.access", "qasync"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)
    return path
