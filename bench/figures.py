"""The shape every benchmark reports in, and the table the harness prints.

A figure is the median of several runs with their spread, so one noisy run on a
2-core machine neither hides nor fakes a change: {"value": median, "min", "max", "runs"}.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import IO

Figure = dict[str, float]
Figures = dict[str, Figure]


def figure(samples: Iterable[float]) -> Figure:
    """Median, min, max and count of one figure's samples (at least one)."""
    values = list(samples)
    if not values:
        raise ValueError("a figure needs at least one sample")
    return {"value": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def figures_from(samples: Mapping[str, list[float]]) -> Figures:
    """One figure per name that has samples (a benchmark that measured nothing has none)."""
    return {name: figure(values) for name, values in samples.items() if values}


def number(value: float) -> str:
    """A figure as the table shows it: whole above 100, two decimals below."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def print_table(figures: Mapping[str, Figure], out: IO[str], targets: Mapping[str, str] | None = None) -> None:
    """One line per figure: median, min, max, runs, and its target when one is given."""
    targets = targets or {}
    width = max((len(name) for name in figures), default=10)
    out.write(f"{'figure':<{width}}  {'median':>9}  {'min':>9}  {'max':>9}  runs  target\n")
    for name, f in figures.items():
        out.write(f"{name:<{width}}  {number(f['value']):>9}  {number(f['min']):>9}  {number(f['max']):>9}  "
                  f"{int(f['runs']):>4}  {targets.get(name, '')}\n")


def cli(prog: str, doc: str, run: Callable[[bool], Figures], quick_help: str, argv: list[str] | None,
        logger: logging.Logger) -> int:
    """The command line each benchmark module shares: --quick, -v, then the table."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each run's samples")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    print_table(run(args.quick), sys.stdout)
    return 0
