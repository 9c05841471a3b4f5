"""The benchmark harness runs and reports in its promised shape (no timing is asserted here)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.timeout(300)

EXPECTED = {"history_add_us", "history_add_us_seed_style", "echo_rtt_ms", "jitter_echo_rtt_ms", "jitter_gap_pct",
            "jitter_drop_pct_to_server", "jitter_drop_pct_to_client"}


def test_quick_harness_reports_every_figure_as_finite_median_min_max_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", "--only", "history,engine_echo"],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert set(figures) == EXPECTED
    for name, f in figures.items():
        assert set(f) == {"value", "min", "max", "runs"}, name
        assert all(math.isfinite(f[k]) for k in ("value", "min", "max")), (name, f)
        assert f["min"] <= f["value"] <= f["max"], (name, f)
        assert f["runs"] >= 1 and f["runs"] == int(f["runs"]), (name, f)
    # The table before the JSON names every figure too.
    table = "\n".join(lines[:-1])
    assert all(name in table for name in EXPECTED)


def test_write_puts_this_runs_table_between_the_markers_naming_the_commit(tmp_path) -> None:
    from bench.report import END_MARK, START_MARK, commit

    target = tmp_path / "BENCHMARKS.md"
    target.write_text(f"# prose\n\n{START_MARK}\nold\n{END_MARK}\n\nmore prose\n")
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "history", "--write", str(target)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    text = target.read_text()
    assert text.startswith("# prose\n") and text.endswith("\nmore prose\n") and "\nold\n" not in text
    table = text.split(START_MARK)[1].split(END_MARK)[0]
    assert f"`{commit(ROOT)}`" in table and "--only history" in table
    assert "| `history_add_us` |" in table and "| `cpu_pct` | – |" in table  # not measured, still listed


def test_unknown_benchmark_name_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "no_such_bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no_such_bench" in done.stderr


def test_soak_drives_the_engine_and_window_it_measures(tmp_path) -> None:
    # A few turns only: that the harness still speaks the engine's and window's current API
    # (it drives private handlers, and broke silently once when one changed).
    script = ("import sys, pathlib; from bench.soak import one_run; "
              "print('growth', one_run(20, 5, pathlib.Path(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=200, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert math.isfinite(float(done.stdout.split("growth")[-1]))
