"""The server key that guards /v1/realtime/client_secrets.

The app that starts the server passes its own in SANDRA_SERVER_KEY. Without one a
random key is made and written, readable by this user only, to a file whose path
(never the key) is printed.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from base import paths

ENV_VAR = "SANDRA_SERVER_KEY"
KEY_FILE = "server_key"
MIN_LENGTH = 16


@dataclass(frozen=True)
class ServerKey:
    value: str
    file: Path | None  # where a generated key was written; None when it came from the environment


def resolve_server_key(environ: dict[str, str] | os._Environ[str]) -> ServerKey:
    """The key from the environment, or a new one written to a 0600 file."""
    given = environ.get(ENV_VAR, "").strip()
    if given:
        if len(given) < MIN_LENGTH:
            raise ValueError(f"{ENV_VAR} is too short: use at least {MIN_LENGTH} characters.")
        return ServerKey(given, None)
    value = "sk-sandra-" + secrets.token_urlsafe(32)
    path = paths.data_dir() / KEY_FILE
    # Created with 0600 from the start, so the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (value + "\n").encode())
    finally:
        os.close(fd)
    return ServerKey(value, path)
