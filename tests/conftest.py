"""Shared test set-up: Qt offscreen, a private home, and the PulseAudio rig."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before anything imports Qt: no display here, and tests must not depend on one.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from rig.pulse_rig import PulseRig, missing_tools  # noqa: E402


@pytest.fixture(scope="session")
def pulse(tmp_path_factory: pytest.TempPathFactory):
    """A private PulseAudio with a virtual mic and speaker; sounddevice re-enumerated to see it."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"PulseAudio tools missing ({', '.join(missing)}): run ./bootstrap.sh test, which installs them")
    rig = PulseRig(tmp_path_factory.mktemp("pulse"))
    rig.start()
    import sounddevice as sd

    # PortAudio enumerates devices once, at initialisation: redo it now that pulse runs.
    sd._terminate()
    sd._initialize()
    try:
        yield rig
    finally:
        rig.stop()
        sd._terminate()
        sd._initialize()


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME and the XDG dirs at a temporary folder, so no test touches the user's files."""
    home = tmp_path / "home"
    for var, sub in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_STATE_HOME", ".local/state"), ("XDG_CACHE_HOME", ".cache")):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(path))
    return home
