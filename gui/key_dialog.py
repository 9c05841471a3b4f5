"""First run: the provider needs an API key and none is stored. Ask for it, say where it goes.

With a system keyring the key is stored there (never in a file). Without one, the
dialog says so and offers what remains: the SANDRA_API_KEY environment variable, or
keeping the key for this session only. Nothing is written to a plaintext file.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QLineEdit, QVBoxLayout, QWidget

from core.config import ENV_API_KEY
from core.provider_catalog import kind as provider_kind


class KeyDialog(QDialog):
    # (provider, key, keep_in_keyring): the app stores it (or keeps it for the session) and connects.
    key_given = Signal(str, str, bool)

    def __init__(self, provider: str, keyring: str | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("keyDialog")
        label = provider_kind(provider).label
        self.setWindowTitle(f"{label} API key")
        self._provider = provider
        self._keyring = keyring
        if keyring:
            where = f"It will be stored in your system keyring ({keyring}), never in a file."
        else:
            where = (f"No system keyring was found, so the key can only be kept for this session. "
                     f"To avoid typing it each time, set {ENV_API_KEY} in the environment, or install "
                     "a keyring (GNOME Keyring, KWallet).")
        self.explanation = QLabel(f"Sandra needs your {label} API key to call {label}. {where}")
        self.explanation.setWordWrap(True)
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("API key")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.use = buttons.addButton("Save and connect" if keyring else "Use for this session",
                                     QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self._give)
        buttons.rejected.connect(self.reject)
        self.key.textChanged.connect(lambda text: self.use.setEnabled(bool(text.strip())))
        self.use.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.explanation)
        layout.addWidget(self.key)
        layout.addWidget(buttons)
        self.setMinimumWidth(460)

    def _give(self) -> None:
        self.key_given.emit(self._provider, self.key.text().strip(), self._keyring is not None)
        self.accept()
