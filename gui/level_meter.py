"""Input level meter: a horizontal bar from -60 dBFS to 0 with a falling peak mark."""

from __future__ import annotations

import math

from PySide6.QtCore import QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

FLOOR_DB = -60.0
# The peak mark falls this many dB per decay tick, like a hardware meter.
_PEAK_FALL_DB = 1.5
_DECAY_MS = 50
# The card the meter sits on (QFrame#card in resources/style.qss): the meter paints its own
# corners in it so it can be opaque, and a repaint of the bar repaints nothing behind it.
_CARD = "#161b22"
_TRACK = "#1f2630"


class LevelMeter(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("levelMeter")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Microphone level")
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._level = FLOOR_DB
        self._peak = FLOOR_DB
        self._decay = QTimer(self)
        self._decay.setInterval(_DECAY_MS)
        self._decay.timeout.connect(self._fall)

    def sizeHint(self) -> QSize:
        return QSize(160, 12)

    def level(self) -> float:
        return self._level

    def set_level(self, dbfs: float) -> None:
        value = FLOOR_DB if math.isnan(dbfs) else min(0.0, max(FLOOR_DB, dbfs))
        drawn = self._drawn()
        self._level = value
        if value > self._peak:
            self._peak = value
        if self._peak > self._level and not self._decay.isActive():
            self._decay.start()
        self._update_if_changed(drawn)

    def _fall(self) -> None:
        drawn = self._drawn()
        self._peak = max(self._level, self._peak - _PEAK_FALL_DB)
        if self._peak <= self._level:
            self._decay.stop()
        self._update_if_changed(drawn)

    def _drawn(self) -> tuple[int, str, int]:
        """What paintEvent would draw, to the pixel: bar width, its colour, peak mark position."""
        width = self.width()
        return (round(width * self._fraction(self._level)), self._color(),
                round(width * self._fraction(self._peak)) if self._peak > FLOOR_DB else -1)

    def _update_if_changed(self, drawn: tuple[int, str, int]) -> None:
        # Levels arrive ~12 times a second and the peak falls 20 times a second; a repaint
        # of pixels that stay the same (a silent room: every level is the floor) is waste.
        if self._drawn() != drawn:
            self.update()

    def _color(self) -> str:
        # Green while comfortable, amber near clipping, red at it.
        return "#3fb68b" if self._level < -12 else "#e0a030" if self._level < -3 else "#e05050"

    @staticmethod
    def _fraction(db: float) -> float:
        return (db - FLOOR_DB) / -FLOOR_DB

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(_CARD))
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(_TRACK))
        painter.drawRoundedRect(rect, 4, 4)
        fraction = self._fraction(self._level)
        if fraction > 0:
            painter.setBrush(QColor(self._color()))
            painter.drawRoundedRect(QRectF(rect.x(), rect.y(), rect.width() * fraction, rect.height()), 4, 4)
        peak_x = rect.x() + rect.width() * self._fraction(self._peak)
        if self._peak > FLOOR_DB:
            painter.setBrush(QColor("#e8edf3"))
            painter.drawRect(QRectF(peak_x - 1, rect.y(), 2, rect.height()))
        painter.end()
