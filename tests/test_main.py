"""The entry point: usage errors, no display, version, and the headless self-test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], home: Path, timeout: float = 180, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "c"), XDG_DATA_HOME=str(home / "d"),
               XDG_STATE_HOME=str(home / "s"), XDG_CACHE_HOME=str(home / "k"), **env_overrides)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_unknown_argument_exits_2_with_usage(tmp_path):
    result = _run(["--no-such-flag"], tmp_path)
    assert result.returncode == 2
    assert "usage: sandra" in result.stderr


def test_version_and_help(tmp_path):
    assert "Sandra Desktop" in _run(["--version"], tmp_path).stdout
    help_text = _run(["--help"], tmp_path).stdout
    for command in ("serve", "metrics-server", "talk", "--self-test", "--screenshot"):
        assert command in help_text


def test_no_display_says_what_to_do_and_exits_1(tmp_path):
    result = _run([], tmp_path)
    assert result.returncode == 1
    assert "xvfb-run" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(300)
def test_self_test_passes_headless(tmp_path):
    result = _run(["--self-test"], tmp_path, timeout=240)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[-1] == "PASS"
    assert all(line.startswith("[  ok]") for line in lines[:-1]), result.stdout
    assert len(lines) >= 5
