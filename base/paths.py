"""Where Sandra's files live: bundled resources and the user's dirs.

One helper for both a source checkout and a PyInstaller bundle (sys._MEIPASS), so
paths resolve the same everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs

APP_NAME = "sandra"
APP_AUTHOR = "sandra"


def app_root() -> Path:
    """The folder that holds resources/ and the packages: the checkout or the bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle)
    return Path(__file__).resolve().parent.parent


def resource(*parts: str) -> Path:
    return app_root().joinpath("resources", *parts)


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def _dir(path: str) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def config_dir() -> Path:
    return _dir(platformdirs.user_config_dir(APP_NAME, APP_AUTHOR))


def data_dir() -> Path:
    return _dir(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))


def log_dir() -> Path:
    return _dir(platformdirs.user_log_dir(APP_NAME, APP_AUTHOR))


def transcripts_dir() -> Path:
    return _dir(str(data_dir() / "transcripts"))
