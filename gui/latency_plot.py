"""Live plot of response_latency per turn with p95 and p99 lines.

Imported lazily (pyqtgraph costs ~0.45 s), after the window has painted. The p95/p99
lines and figures come straight from the engine's LatencyTracker so the plot shows
exactly what telemetry reports; only the drawn points are a rolling window, so a call
of hundreds of turns redraws a bounded amount of data.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

METRIC = "response_latency"
Stats = Mapping[str, float | int | None]

_POINT_COLOR = "#4aa3ff"
_P95_COLOR = "#e0a030"
_P99_COLOR = "#e05050"
_HEADROOM = 1.3


def _fmt(value: float | int | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


class TurnAxis(pg.AxisItem):
    """An axis of turns: whole numbers only, so no 0.5-turn ticks when few turns are drawn."""

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:  # noqa: N802 - Qt's name
        # pyqtgraph's spacings are 1, 2 or 5 times a power of ten: keep the whole ones (offset 0 puts them on turns).
        levels = [(spacing, offset) for spacing, offset in super().tickSpacing(minVal, maxVal, size)
                  if spacing >= 1 and float(spacing).is_integer()]
        return levels or [(1.0, 0.0)]


class LatencyPlot(QWidget):
    def __init__(self, stats: Callable[[], Stats], window: int = 200, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("latencyPanel")
        self._stats = stats
        self._turns: deque[tuple[int, float]] = deque(maxlen=window)
        self._count = 0

        pg.setConfigOptions(antialias=True)
        self.plot = pg.PlotWidget(background="#161b22", axisItems={"bottom": TurnAxis("bottom")})
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=False, y=True, alpha=0.15)
        self.plot.setLabel("left", "response latency", units="ms")
        self.plot.setLabel("bottom", "turn")
        item = self.plot.getPlotItem()
        item.getAxis("left").enableAutoSIPrefix(False)
        legend = self.plot.addLegend(
            offset=(-8, 4), colCount=3, labelTextColor="#c9d1d9", brush=pg.mkBrush(22, 27, 34, 220)
        )
        self.points = self.plot.plot(
            [], [], pen=pg.mkPen(_POINT_COLOR, width=1.5), symbol="o", symbolSize=6,
            symbolBrush=_POINT_COLOR, symbolPen=None, name="per turn",
        )
        dash = Qt.PenStyle.DashLine
        self.p95_line = self.plot.plot([], [], pen=pg.mkPen(_P95_COLOR, width=2, style=dash), name="p95")
        self.p99_line = self.plot.plot([], [], pen=pg.mkPen(_P99_COLOR, width=2, style=dash), name="p99")
        legend.setZValue(10)

        self._figures = {key: QLabel("—") for key in ("count", "avg", "p95", "p99")}
        figures = QGridLayout()
        figures.setVerticalSpacing(2)
        titles = {"count": "turns", "avg": "average", "p95": "p95", "p99": "p99"}
        for row, (key, label) in enumerate(self._figures.items()):
            title = QLabel(titles[key])
            title.setObjectName("figureTitle")
            label.setObjectName(f"figure_{key}")
            label.setProperty("figure", True)
            label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            figures.addWidget(title, row * 2, 0)
            figures.addWidget(label, row * 2 + 1, 0)
        side = QVBoxLayout()
        side.addLayout(figures)
        side.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addLayout(side)

    def add(self, ms: float) -> None:
        """One more turn's latency (the tracker has already recorded it)."""
        self._count += 1
        self._turns.append((self._count, float(ms)))
        data = np.array(self._turns, dtype=float)
        self.points.setData(data[:, 0], data[:, 1])
        self.refresh_stats(first=data[0, 0], last=data[-1, 0])

    def refresh_stats(self, first: float | None = None, last: float | None = None) -> None:
        stats = self._stats()
        if first is None or last is None:
            first, last = (self._turns[0][0], self._turns[-1][0]) if self._turns else (0.0, 0.0)
        # Span the drawn window, half a turn beyond each end so one point still shows a line.
        xs = [first - 0.5, last + 0.5]
        # From zero (honest for a duration) to well above the highest mark: room for the legend.
        top = max([ms for _, ms in self._turns] + [float(stats.get("p99") or 0.0), 100.0])
        self.plot.setYRange(0, top * _HEADROOM, padding=0)
        for line, key in ((self.p95_line, "p95"), (self.p99_line, "p99")):
            value = stats.get(key)
            if value is None:
                line.setData([], [])
            else:
                line.setData(xs, [float(value)] * 2)
        self._figures["count"].setText(str(stats.get("count") or 0))
        for key in ("avg", "p95", "p99"):
            self._figures[key].setText(_fmt(stats.get(key)))

    def figures(self) -> dict[str, str]:
        return {key: label.text() for key, label in self._figures.items()}

    def line_values(self) -> tuple[float | None, float | None]:
        """The y of the drawn p95 and p99 lines (None when not drawn)."""
        values = []
        for line in (self.p95_line, self.p99_line):
            ys = line.yData
            values.append(None if ys is None or len(ys) == 0 else float(ys[0]))
        return values[0], values[1]
