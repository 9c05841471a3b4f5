"""The level meter repaints only when what it draws changes (a CPU cut measured by bench.app_cpu)."""

from __future__ import annotations

from PySide6.QtGui import QPaintEvent

from gui.level_meter import FLOOR_DB, LevelMeter


class CountingMeter(LevelMeter):
    def __init__(self) -> None:
        super().__init__()
        self.paints = 0

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        self.paints += 1
        super().paintEvent(event)


def _shown(qtbot) -> CountingMeter:
    meter = CountingMeter()
    qtbot.addWidget(meter)
    meter.resize(160, 12)
    meter.show()
    qtbot.waitExposed(meter)
    qtbot.wait(50)
    meter.paints = 0
    return meter


def test_a_silent_microphone_costs_no_repaints(qtbot) -> None:
    meter = _shown(qtbot)
    for _ in range(25):  # two seconds of level hand-overs from a silent room
        meter.set_level(FLOOR_DB)
        meter.set_level(float("nan"))
        qtbot.wait(5)
    assert meter.paints == 0


def test_a_new_level_is_drawn_and_the_same_level_again_is_not(qtbot) -> None:
    meter = _shown(qtbot)
    meter.set_level(-20.0)
    qtbot.waitUntil(lambda: meter.paints >= 1, timeout=1000)
    assert meter.level() == -20.0
    painted = meter.paints
    for _ in range(10):
        meter.set_level(-20.0)
        qtbot.wait(5)
    assert meter.paints == painted


def test_the_peak_mark_still_falls_after_a_loud_moment(qtbot) -> None:
    meter = _shown(qtbot)
    meter.set_level(-6.0)
    meter.set_level(FLOOR_DB)
    qtbot.waitUntil(lambda: meter.paints >= 3, timeout=3000)  # the mark is redrawn as it falls
    qtbot.waitUntil(lambda: not meter._decay.isActive(), timeout=5000)  # and comes to rest at the floor
    assert meter._drawn()[2] == -1
