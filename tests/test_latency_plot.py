"""The latency plot's turn axis: whole turns only, read from the axis as it draws (offscreen Qt)."""

from __future__ import annotations

import pytest

from gui.app import application
from gui.latency_plot import LatencyPlot


def _drawn_ticks(plot: LatencyPlot) -> list[tuple[float, list[float], list[str]]]:
    """(spacing, values, labels) per tick level, computed as the axis computes them when it paints."""
    axis = plot.plot.getPlotItem().getAxis("bottom")
    low, high = axis.range
    levels = []
    for spacing, values in axis.tickValues(low, high, axis.width()):
        values = [float(v) for v in values if low <= v <= high]
        levels.append((spacing, values, axis.tickStrings(values, axis.scale, spacing)))
    return levels


@pytest.mark.parametrize("turns", [1, 2, 3, 5, 7, 12, 40, 250])
def test_the_turn_axis_shows_whole_turns_only(qtbot, turns: int) -> None:
    application()
    plot = LatencyPlot(lambda: {"count": turns, "avg": 300.0, "p95": 400.0, "p99": 500.0})
    qtbot.addWidget(plot)
    plot.resize(640, 220)  # the window's plot size: wide enough that pyqtgraph wants fine ticks
    plot.show()
    qtbot.waitExposed(plot)
    for i in range(turns):
        plot.add(250.0 + 10 * i)
    qtbot.wait(20)  # let the view range follow the new data
    levels = _drawn_ticks(plot)
    majors = levels[0][1]
    assert majors, f"no tick on the turn axis for {turns} turns"
    for spacing, values, labels in levels:
        assert spacing >= 1 and float(spacing).is_integer(), levels
        assert all(value.is_integer() for value in values), levels
        assert all(label.lstrip("-").isdigit() for label in labels), levels
    if turns <= 3:
        assert majors == [float(n) for n in range(1, turns + 1)]  # every turn is labelled
