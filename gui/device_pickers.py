"""Microphone and speaker pickers. Choosing one asks the engine to switch at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QWidget

if TYPE_CHECKING:  # core.audio pulls in numpy; the window must paint before that
    from core.audio import DeviceInfo

_DEFAULT = "System default"


class DevicePickers(QWidget):
    changed = Signal(object, object)  # input device name or None, output device name or None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.input = QComboBox()
        self.output = QComboBox()
        for combo in (self.input, self.output):
            combo.addItem(_DEFAULT, None)
            combo.setMinimumContentsLength(18)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.activated.connect(self._emit)  # user choices only, not populate()
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Microphone", self.input)
        form.addRow("Speaker", self.output)

    def populate(self, devices: Sequence["DeviceInfo"], selected_input: str | None, selected_output: str | None) -> None:
        for combo, wanted, names in (
            (self.input, selected_input, [d.name for d in devices if d.is_input]),
            (self.output, selected_output, [d.name for d in devices if d.is_output]),
        ):
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(_DEFAULT, None)
            for name in names:
                combo.addItem(name, name)
            if wanted and combo.findData(wanted) < 0:
                # A saved device that is not plugged in now: keep it visible, marked.
                combo.addItem(f"{wanted} (not found)", wanted)
            combo.setCurrentIndex(max(0, combo.findData(wanted)) if wanted else 0)
            combo.blockSignals(False)

    def selection(self) -> tuple[str | None, str | None]:
        return self.input.currentData(), self.output.currentData()

    def _emit(self) -> None:
        self.changed.emit(*self.selection())
