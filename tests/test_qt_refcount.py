"""PySide6 6.12.0 drops a reference to True at every Signal.emit() on Python 3.11.

qasync emits a signal for every call_soon_threadsafe, which aiortc's threads call
~50 times a second, so a call died with `Fatal Python error: bool_dealloc` after
15-20 s. This keeps any upgrade from bringing it back.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    fired = Signal()
    carried = Signal(object)


def test_signal_emit_does_not_steal_references_to_true(qapp):
    emitter = _Emitter()
    received: list[object] = []
    emitter.fired.connect(lambda: received.append(None))
    emitter.carried.connect(received.append)
    before = sys.getrefcount(True)
    for _ in range(3000):
        emitter.fired.emit()
        emitter.carried.emit(True)
    assert len(received) == 6000
    del received
    after = sys.getrefcount(True)
    # Small positive drift is harmless; the 6.12.0 bug loses one reference per emit.
    assert after >= before - 10, f"sys.getrefcount(True) fell from {before} to {after} over 6000 emits"
