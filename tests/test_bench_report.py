"""bench/report.py: figures in, BENCHMARKS.md's table out, between its markers, naming the commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.figures import figure
from bench.report import END_MARK, START_MARK, MarkersMissing, Stamp, Target, commit, render_table, replace_table, write

STAMP = Stamp(commit="abc1234+dirty", date="2026-11-30 15:00 UTC", machine="2 cores (Test CPU), Python 3.11.9",
              note="`python -m bench --quick`, 60 s.")
TARGETS = {
    "echo_rtt_ms": Target(35),
    "device_echo_rtt_ms": Target(60, relative_to="echo_rtt_ms"),
    "stall_false_reconnects": Target(0, exact=True),
    "cpu_pct": Target(12),
    "startup_ms": Target(1000),
}
FIGURES = {
    "echo_rtt_ms": figure([20.0, 30.0, 25.0]),
    "echo_rtt_ms_plain_aiortc": figure([181.0]),
    "device_echo_rtt_ms": figure([90.0, 80.0, 100.0]),  # 90 > 25 + 60: fails
    "stall_false_reconnects": figure([0.0]),
    "cpu_pct": figure([13.0, 12.5, 14.0]),
    "history_add_us": figure([6.0]),
}
DOCUMENT = f"# Benchmarks\n\nProse before.\n\n{START_MARK}\n| old | table |\n{END_MARK}\n\n## After\n\nProse after.\n"


def _row(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| `{name}` "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_table_names_the_commit_date_and_machine() -> None:
    table = render_table(FIGURES, TARGETS, STAMP)
    first = table.splitlines()[0]
    assert "`abc1234+dirty`" in first and "2026-11-30 15:00 UTC" in first and "2 cores (Test CPU)" in first
    assert "--quick" in first


@pytest.mark.parametrize("name, cells", [
    ("echo_rtt_ms", ["`echo_rtt_ms`", "25.00", "20.00 – 30.00", "3", "181", "≤ 35", "yes"]),
    ("device_echo_rtt_ms", ["`device_echo_rtt_ms`", "90.00", "80.00 – 100", "3", "–", "≤ `echo_rtt_ms` + 60",
                            "**no**"]),
    ("stall_false_reconnects", ["`stall_false_reconnects`", "0.00", "0.00 – 0.00", "1", "–", "= 0", "yes"]),
    ("cpu_pct", ["`cpu_pct`", "13.00", "12.50 – 14.00", "3", "–", "≤ 12", "**no**"]),
    # A target whose figure this run did not measure is listed, not dropped.
    ("startup_ms", ["`startup_ms`", "–", "–", "–", "–", "≤ 1,000", "not measured"]),
    # A figure without a target is listed after the targets.
    ("history_add_us", ["`history_add_us`", "6.00", "6.00 – 6.00", "1", "–", "–", "–"]),
])
def test_each_row_has_median_spread_baseline_target_and_verdict(name: str, cells: list[str]) -> None:
    assert _row(render_table(FIGURES, TARGETS, STAMP), name) == cells


def test_targets_come_first_in_their_order_and_baselines_have_no_row_of_their_own() -> None:
    names = [line.split("`")[1] for line in render_table(FIGURES, TARGETS, STAMP).splitlines() if line.startswith("| `")]
    assert names == [*TARGETS, "history_add_us"]


def test_a_relative_target_with_its_reference_unmeasured_cannot_be_told() -> None:
    figures = {"device_echo_rtt_ms": figure([90.0])}
    assert TARGETS["device_echo_rtt_ms"].holds(figures, "device_echo_rtt_ms") is None
    assert _row(render_table(figures, TARGETS, STAMP), "device_echo_rtt_ms")[-1] == "not measured"


def test_only_the_text_between_the_markers_is_replaced() -> None:
    out = replace_table(DOCUMENT, "NEW TABLE")
    assert out == f"# Benchmarks\n\nProse before.\n\n{START_MARK}\nNEW TABLE\n{END_MARK}\n\n## After\n\nProse after.\n"
    assert replace_table(out, "NEW TABLE") == out  # idempotent: a second write changes nothing else


@pytest.mark.parametrize("document", [
    "# no markers at all\n",
    f"{START_MARK}\nonly the start\n",
    f"{END_MARK}\n{START_MARK}\n",  # wrong order
    f"{START_MARK}\n{END_MARK}\n{START_MARK}\n{END_MARK}\n",  # two tables
])
def test_a_document_without_one_pair_of_markers_is_refused(document: str) -> None:
    with pytest.raises(MarkersMissing):
        replace_table(document, "NEW TABLE")


def test_write_rewrites_the_file_in_place(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(DOCUMENT)
    write(path, FIGURES, TARGETS, STAMP)
    text = path.read_text()
    assert "| old | table |" not in text and "Prose before." in text and "Prose after." in text
    assert "`abc1234+dirty`" in text and "| `cpu_pct` | 13.00 |" in text


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_commit_is_heads_short_hash_and_dirty_when_the_tree_changed(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "a")
    head = _git(tmp_path, "rev-parse", "--short", "HEAD")
    assert commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("changed")
    assert commit(tmp_path) == head + "+dirty"


def test_machine_names_cores_python_and_the_libraries_versions() -> None:
    from bench.report import machine

    text = machine()
    assert "cores" in text and "load average" in text and "Python 3." in text
    assert "PySide6 6." in text and "aiortc 1." in text  # installed here, so a version, not "not installed"


@pytest.mark.parametrize("value, holds", [(24.9, False), (25.0, True), (31.0, True)])
def test_an_at_least_target_holds_at_or_above_its_limit(value: float, holds: bool) -> None:
    target = Target(25, at_least=True)
    assert target.text() == "≥ 25"
    assert target.holds({"aec_erle_db": {"value": value, "min": value, "max": value, "runs": 1}}, "aec_erle_db") is holds
