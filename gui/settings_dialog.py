"""Settings dialog: provider, key, model, voice, instructions, metrics and TURN.

The API key goes only to the system keyring (core.config.set_api_key); the settings
file never sees it. Fields the dialog does not show (devices, window geometry,
hands-free) pass through unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core import config
from core.config import Settings
from base.errors import ConfigError

log = logging.getLogger(__name__)

PROVIDERS: list[tuple[str, str]] = [
    ("local", "Local (offline, built in)"),
    ("openai", "OpenAI"),
    ("azure", "Azure OpenAI"),
    ("custom", "Custom URL (OpenAI-compatible)"),
    ("token_url", "Token URL (your own token endpoint)"),
]
# Which providers use which of the address fields and a key.
_NEEDS = {
    "base_url": {"custom"},
    "azure_resource": {"azure"},
    "token_url": {"token_url"},
    "api_key": {"openai", "azure", "custom"},
}


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("settingsDialog")
        self.setMinimumWidth(520)
        self._original = settings
        self._keys: dict[str, str] = {}  # keys typed in this dialog, by provider, not yet saved
        self._loaded_keys: dict[str, str] = {}  # what the keyring held when shown: unchanged means no write
        self.saved: Settings | None = None  # what accept() wrote

        self.provider = QComboBox()
        for value, label in PROVIDERS:
            self.provider.addItem(label, value)
        self.base_url = QLineEdit()
        self.base_url.setPlaceholderText("https://example.com/v1")
        self.azure_resource = QLineEdit()
        self.azure_resource.setPlaceholderText("resource name (…openai.azure.com)")
        self.token_url = QLineEdit()
        self.token_url.setPlaceholderText("https://your-backend/realtime/token")
        self.api_key = QLineEdit()
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key.setPlaceholderText("stored in the system keyring")
        self.model = QLineEdit()
        self.voice = QLineEdit()
        self.transcription_model = QLineEdit()
        self.instructions = QPlainTextEdit()
        self.instructions.setFixedHeight(90)
        self.metrics_url = QLineEdit()
        self.metrics_url.setPlaceholderText("optional: https://host/api/sandra/metrics")
        self.turn_server = QLineEdit()
        self.turn_server.setPlaceholderText("optional: turn.example.com")
        self.turn_username = QLineEdit()
        self.turn_password = QLineEdit()
        self.turn_password.setEchoMode(QLineEdit.EchoMode.Password)
        self.turn_password.setPlaceholderText("stored in the system keyring")
        self.retention = QSpinBox()
        self.retention.setRange(0, 3650)
        self.retention.setSuffix(" days")
        self.retention.setSpecialValueText("keep forever")
        self.legacy_calls = QCheckBox("Use the older /realtime?model= endpoint")

        form = QFormLayout()
        form.addRow("Provider", self.provider)
        form.addRow("Base URL", self.base_url)
        form.addRow("Azure resource", self.azure_resource)
        form.addRow("Token URL", self.token_url)
        form.addRow("API key", self.api_key)
        form.addRow("Model", self.model)
        form.addRow("Voice", self.voice)
        form.addRow("Transcription model", self.transcription_model)
        form.addRow("Instructions", self.instructions)
        form.addRow("Metrics URL", self.metrics_url)
        form.addRow("TURN server", self.turn_server)
        form.addRow("TURN username", self.turn_username)
        form.addRow("TURN password", self.turn_password)
        form.addRow("Keep transcripts", self.retention)
        form.addRow("", self.legacy_calls)
        self._form = form
        note = QLabel("The API key and the TURN password are kept in your system keyring, "
                      "never in the settings file.")
        note.setWordWrap(True)
        note.setObjectName("hint")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)

        self._current_provider = settings.provider
        self._load(settings)
        self.provider.currentIndexChanged.connect(self._provider_changed)

    def _load(self, s: Settings) -> None:
        index = self.provider.findData(s.provider)
        self.provider.setCurrentIndex(max(0, index))
        self.base_url.setText(s.base_url or "")
        self.azure_resource.setText(s.azure_resource or "")
        self.token_url.setText(s.token_url or "")
        self.model.setText(s.model or "")
        self.voice.setText(s.voice or "")
        self.transcription_model.setText(s.transcription_model or "")
        self.instructions.setPlainText(s.instructions or "")
        self.metrics_url.setText(s.metrics_url or "")
        self.turn_server.setText(s.turn_server or "")
        self.turn_username.setText(s.turn_username or "")
        self.retention.setValue(int(s.transcript_retention_days or 0))
        self.legacy_calls.setChecked(bool(s.legacy_calls_endpoint))
        self.api_key.setText(self._stored_key(s.provider))
        self._loaded_turn_password = self._read_secret(config.get_turn_password)
        self.turn_password.setText(self._loaded_turn_password)
        self._update_enabled()

    def _stored_key(self, provider: str) -> str:
        if provider not in _NEEDS["api_key"]:
            return ""
        if provider not in self._loaded_keys:
            self._loaded_keys[provider] = self._read_secret(lambda: config.get_api_key(provider))
        return self._loaded_keys[provider]

    @staticmethod
    def _read_secret(read: Callable[[], str | None]) -> str:
        try:
            return read() or ""
        except Exception as exc:  # noqa: BLE001 - a locked or missing keyring must not stop the dialog
            log.warning("cannot read the keyring: %s", type(exc).__name__)
            return ""

    def _provider_changed(self) -> None:
        # Keep what was typed for the previous provider, show the new provider's key.
        self._keys[self._current_provider] = self.api_key.text()
        self._current_provider = self.selected_provider()
        key = self._keys.get(self._current_provider)
        self.api_key.setText(key if key is not None else self._stored_key(self._current_provider))
        self._update_enabled()

    def _update_enabled(self) -> None:
        provider = self.selected_provider()
        for name, providers in _NEEDS.items():
            field: QWidget = getattr(self, name)
            field.setEnabled(provider in providers)
            label = self._form.labelForField(field)
            if label is not None:
                label.setEnabled(provider in providers)

    def selected_provider(self) -> str:
        return str(self.provider.currentData())

    def settings(self) -> Settings:
        """The settings as the dialog shows them (nothing saved yet)."""
        return dataclasses.replace(
            self._original,
            provider=self.selected_provider(),
            base_url=self.base_url.text().strip(),
            azure_resource=self.azure_resource.text().strip(),
            token_url=self.token_url.text().strip(),
            model=self.model.text().strip(),
            voice=self.voice.text().strip(),
            transcription_model=self.transcription_model.text().strip(),
            instructions=self.instructions.toPlainText(),
            metrics_url=self.metrics_url.text().strip(),
            turn_server=self.turn_server.text().strip(),
            turn_username=self.turn_username.text().strip(),
            transcript_retention_days=self.retention.value(),
            legacy_calls_endpoint=self.legacy_calls.isChecked(),
        )

    def save(self) -> Settings:
        """Write the keyring and the settings file; returns what was saved.

        Raises ConfigError (e.g. no usable keyring) before anything is written to the file.
        """
        self._keys[self.selected_provider()] = self.api_key.text().strip()
        for provider, key in self._keys.items():
            if provider not in _NEEDS["api_key"] or key == self._stored_key(provider):
                continue  # unchanged (also: a key from SANDRA_API_KEY is not copied into the keyring)
            if key:
                config.set_api_key(provider, key)
            else:
                config.delete_api_key(provider)
        turn_password = self.turn_password.text().strip()
        if turn_password != self._loaded_turn_password:
            if turn_password:
                config.set_turn_password(turn_password)
            else:
                config.delete_turn_password()
        saved = self.settings()
        config.save_settings(saved)
        log.info("settings saved (provider %s)", saved.provider)
        return saved

    def accept(self) -> None:
        try:
            self.saved = self.save()
        except ConfigError as exc:
            QMessageBox.warning(self, "Settings not saved", str(exc))
            return
        super().accept()
