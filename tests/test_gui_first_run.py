"""First run: a provider that needs a key and finds none asks for it, and a slow keyring never
freezes the window (keyring calls run off the window's thread)."""

from __future__ import annotations

import asyncio
import time

import pytest
from PySide6.QtCore import QTimer

from core import config
from core.config import Settings
from gui.app import application, build_window
from gui.key_dialog import KeyDialog
from memory_keyring import MemoryKeyring, use_keyring
from test_gui_e2e import run_on_qasync, until

KEYRING_DELAY_S = 5.0


class SlowKeyring(MemoryKeyring):
    """A keyring that takes 5 s to answer, as a locked one waiting for its password prompt does."""

    def get_password(self, service: str, username: str) -> str | None:
        time.sleep(KEYRING_DELAY_S)
        return super().get_password(service, username)


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDRA_API_KEY", raising=False)
    monkeypatch.delenv("SANDRA_TURN_PASSWORD", raising=False)


def _key_dialogs(window) -> list[KeyDialog]:
    return [w for w in window.findChildren(KeyDialog) if w.isVisible()]


def test_a_missing_key_opens_the_key_dialog_and_a_slow_keyring_never_freezes_the_window(private_home) -> None:
    application()
    window = build_window(Settings(provider="openai"))
    gaps: list[float] = []

    async def scenario() -> None:
        window.show()
        last = time.monotonic()

        def tick() -> None:
            nonlocal last
            now = time.monotonic()
            gaps.append(now - last)
            last = now

        ticker = QTimer()
        ticker.timeout.connect(tick)
        ticker.start(50)
        started = time.monotonic()
        window.session.connect_call()
        await until(lambda: _key_dialogs(window), KEYRING_DELAY_S * 3 + 10, "the key dialog appears")
        ticker.stop()
        assert time.monotonic() - started >= KEYRING_DELAY_S  # it did wait for the slow keyring...
        dialog = _key_dialogs(window)[0]
        assert "stored in your system keyring" in dialog.explanation.text()
        assert dialog.use.text() == "Save and connect"
        await window.session.close()

    with use_keyring(SlowKeyring()):
        try:
            run_on_qasync(scenario())
        finally:
            window.allow_close()
            window.close()
    # ...and the window went on painting and answering meanwhile.
    assert len(gaps) > KEYRING_DELAY_S / 0.05 / 2
    assert max(gaps) < 0.5, f"the window froze for {max(gaps):.2f} s"


def test_without_a_keyring_the_key_is_offered_for_this_session_only(private_home) -> None:
    from keyring.backends import fail

    application()
    window = build_window(Settings(provider="openai"))

    async def scenario() -> None:
        window.show()
        window.session.connect_call()
        await until(lambda: _key_dialogs(window), 20, "the key dialog appears")
        dialog = _key_dialogs(window)[0]
        text = dialog.explanation.text()
        assert "for this session" in text and config.ENV_API_KEY in text
        assert dialog.use.text() == "Use for this session"
        await window.session.close()

    with use_keyring(fail.Keyring()):
        try:
            run_on_qasync(scenario())
        finally:
            window.allow_close()
            window.close()
    assert not any(p.is_file() and b"sk-" in p.read_bytes() for p in private_home.rglob("*"))
