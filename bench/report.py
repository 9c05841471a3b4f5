"""BENCHMARKS.md's figures table, written by `python -m bench --json --write`, never by hand.

The table sits between two marker comments; everything outside them (the prose) is kept.
It is stamped with the commit the figures describe (`git rev-parse --short HEAD`, "+dirty"
when the work tree has changes), the date and the machine, so a row can be traced to code.
Every target is listed, measured or not, with whether it holds; a figure measured without
a target is listed too, its target "–".
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import logging
import os
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.figures import Figure, number

log = logging.getLogger(__name__)

START_MARK = "<!-- bench:figures:start (written by python -m bench --json --write; do not edit by hand) -->"
END_MARK = "<!-- bench:figures:end -->"
BASELINE_SUFFIX = "_plain_aiortc"


class MarkersMissing(ValueError):
    """The document has not exactly one start marker followed by one end marker."""


@dataclass(frozen=True)
class Target:
    """`figure <= limit`, or `figure <= other figure + limit` (relative_to), or `== limit` (exact),
    or `figure >= limit` (at_least: more is better, as with echo reduction)."""

    limit: float
    relative_to: str | None = None
    exact: bool = False
    at_least: bool = False

    def text(self) -> str:
        limit = f"{self.limit:,.0f}" if self.limit == int(self.limit) else number(self.limit)
        if self.exact:
            return f"= {limit}"
        if self.at_least:
            return f"≥ {limit}"
        if self.relative_to:
            return f"≤ `{self.relative_to}` + {limit}"
        return f"≤ {limit}"

    def bound(self, figures: Mapping[str, Figure]) -> float | None:
        """The limit this run's median must keep to; None when its reference was not measured."""
        if self.relative_to is None:
            return self.limit
        reference = figures.get(self.relative_to)
        return None if reference is None else reference["value"] + self.limit

    def holds(self, figures: Mapping[str, Figure], name: str) -> bool | None:
        """Whether the median of `name` keeps to the target; None when it cannot be told."""
        bound = self.bound(figures)
        if name not in figures or bound is None:
            return None
        value = figures[name]["value"]
        if self.exact:
            return value == bound
        return value >= bound if self.at_least else value <= bound


@dataclass(frozen=True)
class Stamp:
    commit: str
    date: str
    machine: str
    note: str = ""  # how the run was made: --quick, --only, its wall time


def commit(root: Path) -> str:
    """Short hash of HEAD, "+dirty" when tracked or untracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot tell the commit: %s", exc)
        return "unknown commit"
    return head + ("+dirty" if dirty else "")


def _version(module: str) -> str:
    """The version a module reports of itself (PySide6's distribution is named PySide6-Essentials)."""
    try:
        return str(getattr(importlib.import_module(module), "__version__", None) or importlib.metadata.version(module))
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """Cores, CPU model, load, OS, Python and the versions of the libraries the figures depend on.

    The load average is there because on a busy machine every timing figure reads high."""
    return (f"{os.cpu_count()} cores ({_cpu_model()}), load average {os.getloadavg()[0]:.1f} at the start, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"aiortc {_version('aiortc')}, PySide6 {_version('PySide6')}, sounddevice {_version('sounddevice')}")


def stamp_now(root: Path, note: str = "") -> Stamp:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return Stamp(commit(root), date, machine(), note)


def _holds_text(verdict: bool | None) -> str:
    return "not measured" if verdict is None else ("yes" if verdict else "**no**")


def render_table(figures: Mapping[str, Figure], targets: Mapping[str, Target], stamp: Stamp) -> str:
    """The stamp and one row per target (in target order), then every other figure measured."""
    lines = [f"Commit `{stamp.commit}`, {stamp.date}; {stamp.machine}."
             + (f" {stamp.note}" if stamp.note else ""), "",
             "| figure | median | min – max | runs | plain aiortc, same run | target | holds |",
             "|---|---|---|---|---|---|---|"]
    baselines = {name for name in figures if name.endswith(BASELINE_SUFFIX) and name[:-len(BASELINE_SUFFIX)] in
                 (*figures, *targets)}
    rest = [name for name in figures if name not in targets and name not in baselines]
    for name in (*targets, *rest):
        target = targets.get(name)
        baseline = figures.get(name + BASELINE_SUFFIX)
        base_text = "–" if baseline is None else number(baseline["value"])
        target_text = "–" if target is None else target.text()
        verdict = "–" if target is None else _holds_text(target.holds(figures, name))
        f = figures.get(name)
        if f is None:
            lines.append(f"| `{name}` | – | – | – | {base_text} | {target_text} | {verdict} |")
            continue
        lines.append(f"| `{name}` | {number(f['value'])} | {number(f['min'])} – {number(f['max'])} | "
                     f"{int(f['runs'])} | {base_text} | {target_text} | {verdict} |")
    return "\n".join(lines)


def replace_table(document: str, table: str) -> str:
    """`document` with what lies between the markers replaced by `table`; the rest untouched."""
    if document.count(START_MARK) != 1 or document.count(END_MARK) != 1:
        raise MarkersMissing(f"expected one {START_MARK!r} and one {END_MARK!r}")
    head, _, tail = document.partition(START_MARK)
    _, _, tail = tail.partition(END_MARK)
    if END_MARK in head:
        raise MarkersMissing("the end marker comes before the start marker")
    return f"{head}{START_MARK}\n{table}\n{END_MARK}{tail}"


def write(path: Path, figures: Mapping[str, Figure], targets: Mapping[str, Target], stamp: Stamp) -> None:
    """Rewrite the table in `path` (BENCHMARKS.md) from this run's figures."""
    path.write_text(replace_table(path.read_text(), render_table(figures, targets, stamp)))
    log.info("wrote %d figures into %s (commit %s)", len(figures), path, stamp.commit)
