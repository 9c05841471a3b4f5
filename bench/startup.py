"""Startup to first paint: `python -m bench.startup [--runs N]`.

Starts `main.py` as the user does (offscreen platform, a fresh private home, so the
first-launch path) and times process start → the window's first paint, which the app
reports on stdout when SANDRA_EXIT_AFTER_FIRST_PAINT=1 (gui.app). Target: 1.5 s here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.figures import Figures, figure, print_table
from gui.app import FIRST_PAINT_MARK, PROBE_ENV

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 1500.0


def one_run(home: Path) -> float:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local/share"), XDG_STATE_HOME=str(home / ".local/state"))
    env[PROBE_ENV] = "1"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == FIRST_PAINT_MARK:
            elapsed = (time.perf_counter() - started) * 1000
            break
    else:
        raise RuntimeError(f"the window never painted: {proc.stderr.read() if proc.stderr else ''}")
    if proc.wait(timeout=30) != 0:
        raise RuntimeError(f"exit code {proc.returncode}")
    return elapsed


def run(quick: bool = False, runs: int | None = None) -> Figures:
    """startup_ms over `runs` launches (3 when quick, 7 otherwise) after one uncounted warm-up."""
    count = runs if runs is not None else (3 if quick else 7)
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp))  # warm the OS file cache once, not counted
        return {"startup_ms": figure(one_run(Path(tmp)) for _ in range(count))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    print_table(run(runs=args.runs), sys.stdout, {"startup_ms": f"<= {TARGET_MS:.0f}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
