"""Self-test check: the main window is built and painted offscreen."""

from __future__ import annotations

import os


def selftest_check() -> str:
    """Build the window with the demo call, grab it, and check the picture is real."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QApplication

    from core.config import Settings
    from gui import demo
    from gui.app import application, build_window

    application()
    tracker = demo.demo_tracker()
    window = build_window(Settings(), latency_stats=lambda: tracker.stats("response_latency"))
    try:
        window.resize(900, 600)
        window.show()
        window.install_latency_plot()
        demo.play(window.session.bridge, tracker)
        QApplication.processEvents()
        image = window.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
        if image.isNull() or image.width() < 100 or image.height() < 100:
            raise RuntimeError(f"the window painted an empty picture ({image.width()}x{image.height()})")
        colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
        if len(colours) < 16:
            raise RuntimeError(f"the window painted a near-uniform picture ({len(colours)} colours)")
        return f"window painted {image.width()}x{image.height()}, {len(colours)} colours sampled"
    finally:
        window.allow_close()
        window.close()
        window.deleteLater()

