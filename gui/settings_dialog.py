"""Settings dialog: provider, key, model, voice, instructions, hands-free options, metrics, TURN.

The dialog writes nothing: `change()` is what the user changed — new settings and
the secrets typed — and the app's one writer (gui/call_session.py) persists it, the
API key to the system keyring only, never the settings file. What the keyring held
is read by the app off the window's thread and handed in (`StoredSecrets`). Fields
the dialog does not show (devices, window geometry, hands-free) pass through.
The Tools tab lists the MCP servers started with each call (issue #17); an HTTP
server's header value goes to the keyring like the API key.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSystemTrayIcon,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.config import MCP_TRANSPORTS, REMOVE, McpServerSettings, Settings, SettingsChange
from core.provider_catalog import KINDS, kind as provider_kind
from gui.global_hotkey import parse_key

log = logging.getLogger(__name__)

# (value, label) for the hands-free options that go into the session.
VAD_CHOICES = [("server_vad", "Voice activity (server VAD)"), ("semantic_vad", "Meaning (semantic VAD)")]
EAGERNESS_CHOICES = [("auto", "Auto"), ("low", "Low: let me think"), ("medium", "Medium"), ("high", "High: answer fast")]
NOISE_CHOICES = [("", "Off"), ("near_field", "Near field (headset)"), ("far_field", "Far field (laptop, room)")]


@dataclasses.dataclass(frozen=True)
class StoredSecrets:
    """What the keyring held when the dialog opened (read off the window's thread)."""

    api_keys: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    turn_password: str = dataclasses.field(default="", repr=False)
    mcp_headers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)  # server name -> value


class ToolsTab(QWidget):
    """The MCP servers: a list, and a form that adds, edits or removes the selected one."""

    def __init__(self, servers: tuple[McpServerSettings, ...], headers: dict[str, str]) -> None:
        super().__init__()
        self.servers = list(servers)
        self.headers = dict(headers)  # header values by server name, as edited
        self.list = QListWidget()
        self.name = QLineEdit()
        self.transport = _choice_combo([("stdio", "Program (stdio)"), ("http", "Web address (streamable HTTP)")])
        self.command = QLineEdit()
        self.command.setPlaceholderText("e.g. npx")
        self.args = QLineEdit()
        self.args.setPlaceholderText("e.g. -y @modelcontextprotocol/server-filesystem ~/Documents")
        self.env = QPlainTextEdit()
        self.env.setPlaceholderText("NAME=value, one a line")
        self.env.setFixedHeight(60)
        self.url = QLineEdit()
        self.url.setPlaceholderText("https://host/mcp")
        self.header_name = QLineEdit()
        self.header_name.setPlaceholderText("optional, e.g. Authorization")
        self.header_value = QLineEdit()
        self.header_value.setEchoMode(QLineEdit.EchoMode.Password)
        self.header_value.setPlaceholderText("stored in the system keyring")
        self.enabled = QCheckBox("Start this server with each call")
        self.disabled_tools = QLineEdit()
        self.disabled_tools.setPlaceholderText("tools of this server to leave out, comma-separated")
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.hide()
        form = QFormLayout()
        for label, widget in (("Name", self.name), ("Kind", self.transport), ("Command", self.command),
                              ("Arguments", self.args), ("Environment", self.env), ("URL", self.url),
                              ("Header", self.header_name), ("Header value", self.header_value),
                              ("", self.enabled), ("Tools off", self.disabled_tools)):
            form.addRow(label, widget)
        self.add_button = QPushButton("Add")
        self.save_button = QPushButton("Save changes")
        self.remove_button = QPushButton("Remove")
        row = QHBoxLayout()
        for button, slot in ((self.add_button, self.add), (self.save_button, self.save_selected),
                             (self.remove_button, self.remove_selected)):
            button.setAutoDefault(False)
            button.clicked.connect(slot)
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("MCP servers give Sandra more tools; they start when a call starts."))
        layout.addWidget(self.list)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.error)
        self.list.currentRowChanged.connect(self._show)
        self.transport.currentIndexChanged.connect(self._update_enabled)
        self.enabled.setChecked(True)
        self._refill()
        self._update_enabled()

    def _refill(self) -> None:
        self.list.clear()
        for server in self.servers:
            where = server.command if server.transport == "stdio" else server.url
            self.list.addItem(f"{server.name}: {where}{'' if server.enabled else ' (off)'}")
        self.remove_button.setEnabled(bool(self.servers))
        self.save_button.setEnabled(bool(self.servers))

    def _show(self, row: int) -> None:
        if not 0 <= row < len(self.servers):
            return
        server = self.servers[row]
        self.name.setText(server.name)
        _select(self.transport, server.transport)
        self.command.setText(server.command)
        self.args.setText(shlex.join(server.args))
        self.env.setPlainText("\n".join(f"{name}={value}" for name, value in server.env))
        self.url.setText(server.url)
        self.header_name.setText(server.header_name)
        self.header_value.setText(self.headers.get(server.name, ""))
        self.enabled.setChecked(server.enabled)
        self.disabled_tools.setText(", ".join(server.disabled_tools))

    def _update_enabled(self) -> None:
        stdio = self.transport.currentData() == "stdio"
        for widget in (self.command, self.args, self.env):
            widget.setEnabled(stdio)
        for widget in (self.url, self.header_name, self.header_value):
            widget.setEnabled(not stdio)

    def _from_form(self, replacing: int | None) -> McpServerSettings | None:
        """The server the form describes; None (and the reason shown) when it is not usable."""
        name, transport = self.name.text().strip(), str(self.transport.currentData())
        try:
            args = tuple(shlex.split(self.args.text()))
        except ValueError as exc:
            return self._refuse(f"The arguments cannot be split into words ({exc}).")
        env = []
        for line in self.env.toPlainText().splitlines():
            if line.strip():
                if "=" not in line:
                    return self._refuse(f"The environment line {line.strip()!r} is not NAME=value.")
                key, value = line.split("=", 1)
                env.append((key.strip(), value))
        stdio = transport == "stdio"  # only the fields of its kind: the form's others may hold leftovers
        server = McpServerSettings(
            name=name, transport=transport, command=self.command.text().strip() if stdio else "",
            args=args if stdio else (), env=tuple(env) if stdio else (), url="" if stdio else self.url.text().strip(),
            header_name="" if stdio else self.header_name.text().strip(), enabled=self.enabled.isChecked(),
            disabled_tools=tuple(t.strip() for t in self.disabled_tools.text().split(",") if t.strip()))
        others = [s.name for i, s in enumerate(self.servers) if i != replacing]
        if not name or name in others:
            return self._refuse("Give the server a name no other server has.")
        if transport == "stdio" and not server.command:
            return self._refuse("Name the command that starts the server.")
        if transport == "http" and not server.url.startswith(("http://", "https://")):
            return self._refuse("Give the server's address, starting with http:// or https://.")
        if not server.valid() or transport not in MCP_TRANSPORTS:
            return self._refuse("This server's settings are not usable.")
        self.error.hide()
        return server

    def _refuse(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()
        return None

    def _keep_header(self, old_name: str | None, server: McpServerSettings) -> None:
        if old_name is not None:
            self.headers.pop(old_name, None)
        value = self.header_value.text().strip()
        if server.transport == "http" and server.header_name and value:
            self.headers[server.name] = value

    def add(self) -> None:
        server = self._from_form(None)
        if server is not None:
            self.servers.append(server)
            self._keep_header(None, server)
            self._refill()
            self.list.setCurrentRow(len(self.servers) - 1)

    def save_selected(self) -> None:
        row = self.list.currentRow()
        if not 0 <= row < len(self.servers):
            return
        server = self._from_form(row)
        if server is not None:
            self._keep_header(self.servers[row].name, server)
            self.servers[row] = server
            self._refill()
            self.list.setCurrentRow(row)

    def remove_selected(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.servers):
            self.headers.pop(self.servers.pop(row).name, None)
            self._refill()

    def header_changes(self, stored: dict[str, str]) -> dict[str, str]:
        """Header values to write (a new value) or delete (REMOVE), against what the keyring held."""
        changes = {name: value for name, value in self.headers.items() if stored.get(name) != value}
        changes.update({name: REMOVE for name in stored if name not in self.headers})
        return changes


def _choice_combo(choices: list[tuple[str, str]]) -> QComboBox:
    combo = QComboBox()
    for value, label in choices:
        combo.addItem(label, value)
    return combo


def _select(combo: QComboBox, value: str) -> None:
    combo.setCurrentIndex(max(0, combo.findData(value)))


class SettingsDialog(QDialog):
    submitted = Signal(object)  # a SettingsChange; the app saves it, then closes the dialog

    def __init__(self, settings: Settings, stored: StoredSecrets | None = None, parent: QWidget | None = None,
                 *, hotkey_note: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("settingsDialog")
        self.setMinimumWidth(520)
        self._original = settings
        self._stored = stored or StoredSecrets()
        self._keys: dict[str, str] = {}  # keys typed in this dialog, by provider, not yet saved

        self.provider = _choice_combo([(k.id, k.label) for k in KINDS.values()])
        self.base_url = QLineEdit()
        self.base_url.setPlaceholderText("https://example.com/v1")
        self.azure_resource = QLineEdit()
        self.azure_resource.setPlaceholderText("resource name (…openai.azure.com)")
        self.token_url = QLineEdit()
        self.token_url.setPlaceholderText("https://your-backend/realtime/token")
        self.api_key = QLineEdit()
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key.setPlaceholderText("stored in the system keyring")
        # Lists that fit the provider; editable, so any other name can be typed.
        self.model = QComboBox()
        self.model.setEditable(True)
        self.voice = QComboBox()
        self.voice.setEditable(True)
        self.language = QLineEdit()
        self.language.setPlaceholderText("e.g. en, fr, de (empty: detect)")
        self.language.setMaxLength(8)
        self.transcription_model = QLineEdit()
        self.instructions = QPlainTextEdit()
        self.instructions.setFixedHeight(90)
        self.vad = _choice_combo(VAD_CHOICES)
        self.eagerness = _choice_combo(EAGERNESS_CHOICES)
        self.noise_reduction = _choice_combo(NOISE_CHOICES)
        self.echo_cancellation = QCheckBox("Cancel Sandra's own voice in the microphone (hands-free)")
        self.noise_suppression = QCheckBox("Suppress background noise in the microphone")
        self.echo_in_push_to_talk = QCheckBox("Also while holding the button (push-to-talk)")
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
        self.close_to_tray = QCheckBox("Closing the window keeps Sandra running in the tray")
        if not QSystemTrayIcon.isSystemTrayAvailable():
            self.close_to_tray.setEnabled(False)
            self.close_to_tray.setText(self.close_to_tray.text() + " (this desktop has no tray)")
        self.global_ptt_key = QLineEdit()
        self.global_ptt_key.setPlaceholderText("e.g. Ctrl+Alt+Space (empty: off)")
        # What the running key says of itself: working, or why not (Wayland, taken by another app).
        self.hotkey_note = QLabel(hotkey_note)
        self.hotkey_note.setObjectName("hint")
        self.hotkey_note.setWordWrap(True)
        self.hotkey_note.setVisible(bool(hotkey_note))

        form = QFormLayout()
        form.addRow("Provider", self.provider)
        form.addRow("Base URL", self.base_url)
        form.addRow("Azure resource", self.azure_resource)
        form.addRow("Token URL", self.token_url)
        form.addRow("API key", self.api_key)
        form.addRow("Model", self.model)
        form.addRow("Voice", self.voice)
        form.addRow("Language", self.language)
        form.addRow("Transcription model", self.transcription_model)
        form.addRow("Instructions", self.instructions)
        form.addRow("Hands-free turns", self.vad)
        form.addRow("Eagerness", self.eagerness)
        form.addRow("Noise reduction", self.noise_reduction)
        form.addRow("", self.echo_cancellation)
        form.addRow("", self.noise_suppression)
        form.addRow("", self.echo_in_push_to_talk)
        form.addRow("Metrics URL", self.metrics_url)
        form.addRow("TURN server", self.turn_server)
        form.addRow("TURN username", self.turn_username)
        form.addRow("TURN password", self.turn_password)
        form.addRow("Keep transcripts", self.retention)
        form.addRow("", self.legacy_calls)
        form.addRow("Global talk key", self.global_ptt_key)
        form.addRow("", self.hotkey_note)
        form.addRow("", self.close_to_tray)
        self._form = form
        note = QLabel("The API key and the TURN password are kept in your system keyring, "
                      "never in the settings file.")
        note.setWordWrap(True)
        note.setObjectName("hint")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self._buttons = buttons
        buttons.accepted.connect(self.submit)
        buttons.rejected.connect(self.reject)
        general = QWidget()
        general_layout = QVBoxLayout(general)
        general_layout.addLayout(form)
        general_layout.addWidget(note)
        self.tools = ToolsTab(settings.mcp_servers, self._stored.mcp_headers)
        self.tabs = QTabWidget()
        self.tabs.addTab(general, "General")
        self.tabs.addTab(self.tools, "Tools")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        self._error = QLabel()
        self._error.setObjectName("error")
        self._error.setWordWrap(True)
        self._error.hide()
        layout.addWidget(self._error)
        layout.addWidget(buttons)

        self._current_provider = settings.provider
        self._load(settings)
        self.provider.currentIndexChanged.connect(self._provider_changed)

    def _load(self, s: Settings) -> None:
        _select(self.provider, s.provider)
        self.base_url.setText(s.base_url or "")
        self.azure_resource.setText(s.azure_resource or "")
        self.token_url.setText(s.token_url or "")
        self._fill_lists(s.provider, s.model, s.voice)
        self.language.setText(s.language)
        self.transcription_model.setText(s.transcription_model or "")
        self.instructions.setPlainText(s.instructions or "")
        _select(self.vad, s.vad)
        _select(self.eagerness, s.eagerness)
        _select(self.noise_reduction, s.noise_reduction)
        self.echo_cancellation.setChecked(s.echo_cancellation)
        self.noise_suppression.setChecked(s.noise_suppression)
        self.echo_in_push_to_talk.setChecked(s.echo_in_push_to_talk)
        self.metrics_url.setText(s.metrics_url or "")
        self.turn_server.setText(s.turn_server or "")
        self.turn_username.setText(s.turn_username or "")
        self.retention.setValue(int(s.transcript_retention_days or 0))
        self.legacy_calls.setChecked(bool(s.legacy_calls_endpoint))
        self.global_ptt_key.setText(s.global_ptt_key)
        self.close_to_tray.setChecked(s.close_to_tray)
        self.api_key.setText(self._stored.api_keys.get(s.provider, ""))
        self.turn_password.setText(self._stored.turn_password)
        self._update_enabled()

    def _fill_lists(self, provider: str, model: str, voice: str) -> None:
        described = provider_kind(provider)
        for combo, items, current in ((self.model, described.models, model), (self.voice, described.voices, voice)):
            combo.clear()
            combo.addItems(list(items))
            combo.setCurrentText(current if current else items[0])
        self.model.setEditable(described.free_model)

    def _provider_changed(self) -> None:
        # Keep what was typed for the previous provider, show the new provider's key and lists.
        self._keys[self._current_provider] = self.api_key.text()
        self._current_provider = self.selected_provider()
        key = self._keys.get(self._current_provider)
        self.api_key.setText(key if key is not None else self._stored.api_keys.get(self._current_provider, ""))
        described = provider_kind(self._current_provider)
        self._fill_lists(described.id, described.default_model, described.voices[0])
        self._update_enabled()

    def _update_enabled(self) -> None:
        described = provider_kind(self.selected_provider())
        uses = {self.base_url: described.uses_base_url, self.azure_resource: described.uses_azure_resource,
                self.token_url: described.uses_token_url, self.api_key: described.takes_key}
        for widget, used in uses.items():
            widget.setEnabled(used)
            label = self._form.labelForField(widget)
            if label is not None:
                label.setEnabled(used)

    def selected_provider(self) -> str:
        return str(self.provider.currentData())

    def settings(self) -> Settings:
        """The settings as the dialog shows them (nothing saved)."""
        return dataclasses.replace(
            self._original,
            provider=self.selected_provider(),
            base_url=self.base_url.text().strip(),
            azure_resource=self.azure_resource.text().strip(),
            token_url=self.token_url.text().strip(),
            model=self.model.currentText().strip(),
            voice=self.voice.currentText().strip(),
            language=self.language.text().strip().lower(),
            transcription_model=self.transcription_model.text().strip(),
            instructions=self.instructions.toPlainText(),
            vad=str(self.vad.currentData()),
            eagerness=str(self.eagerness.currentData()),
            noise_reduction=str(self.noise_reduction.currentData()),
            echo_cancellation=self.echo_cancellation.isChecked(),
            noise_suppression=self.noise_suppression.isChecked(),
            echo_in_push_to_talk=self.echo_in_push_to_talk.isChecked(),
            metrics_url=self.metrics_url.text().strip(),
            turn_server=self.turn_server.text().strip(),
            turn_username=self.turn_username.text().strip(),
            transcript_retention_days=self.retention.value(),
            legacy_calls_endpoint=self.legacy_calls.isChecked(),
            global_ptt_key=self.global_ptt_key.text().strip(),
            close_to_tray=self.close_to_tray.isChecked(),
            mcp_servers=tuple(self.tools.servers),
        )

    def change(self) -> SettingsChange:
        """New settings, and only the secrets that differ from what was stored."""
        self._keys[self.selected_provider()] = self.api_key.text()
        api_keys = {}
        for provider, key in self._keys.items():
            key = key.strip()
            # Unchanged (also: a key from SANDRA_API_KEY shown here is not copied into the keyring).
            if provider_kind(provider).takes_key and key != self._stored.api_keys.get(provider, ""):
                api_keys[provider] = key or REMOVE
        turn_password = self.turn_password.text().strip()
        return SettingsChange(self.settings(), api_keys,
                              turn_password if turn_password != self._stored.turn_password else None,
                              self.tools.header_changes(self._stored.mcp_headers))

    def submit(self) -> None:
        """Save pressed: hand the change to the app; it closes the dialog once it is saved."""
        key = self.global_ptt_key.text().strip()
        try:
            if key:
                parse_key(key)
        except ValueError as exc:
            self.failed(f"Global talk key: {exc}")
            return
        self._buttons.setEnabled(False)
        self.submitted.emit(self.change())

    def failed(self, message: str) -> None:
        """The app could not save (e.g. no usable keyring): say why, keep what was typed."""
        self._buttons.setEnabled(True)
        self._error.setText(message)
        self._error.show()
