"""Settings dialog: every field round-trips; the dialog writes nothing, the app's one writer
saves the keys to the keyring and nowhere on disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from base import paths
from core import config
from core.config import Settings, load_settings
from gui.app import application, build_window
from gui.settings_dialog import SettingsDialog, StoredSecrets
from memory_keyring import use_memory_keyring

API_KEY = "sk-test-0123456789abcdefSECRET"
TURN_PASSWORD = "turn-pass-9876543210"


@pytest.fixture
def memory_keyring(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SANDRA_API_KEY", raising=False)
    monkeypatch.delenv("SANDRA_TURN_PASSWORD", raising=False)
    with use_memory_keyring() as backend:
        yield backend


def _every_field_changed() -> Settings:
    return dataclasses.replace(
        Settings(),
        provider="azure",
        base_url="https://compatible.example/v1",
        token_url="https://backend.example/token",
        azure_resource="contoso-east",
        model="gpt-realtime-mini",
        voice="cedar",
        instructions="Answer in French.\nKeep it short.",
        transcription_model="whisper-1",
        metrics_url="https://metrics.example/api/sandra/metrics",
        turn_server="turn.example.org",
        turn_username="alice",
        transcript_retention_days=7,
        legacy_calls_endpoint=True,
        vad="semantic_vad",
        eagerness="high",
        noise_reduction="near_field",
        language="fr",
        echo_cancellation=False,
        noise_suppression=False,
        echo_in_push_to_talk=True,
        hands_free=True,
        input_device="pulse",
        output_device="spk",
        window_geometry="AdnQywADAAAAAAAA",
        global_ptt_key="Ctrl+Shift+F12",
        close_to_tray=True,
    )


def test_every_field_round_trips_and_keys_stay_in_the_keyring(qtbot, private_home: Path, memory_keyring) -> None:
    application()
    wanted = _every_field_changed()
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    # Fill the dialog as a user would.
    dialog.provider.setCurrentIndex(dialog.provider.findData(wanted.provider))
    dialog.base_url.setText(wanted.base_url)
    dialog.token_url.setText(wanted.token_url)
    dialog.azure_resource.setText(wanted.azure_resource)
    assert dialog.voice.findText("cedar") >= 0 and dialog.model.findText("gpt-realtime-mini") >= 0  # the provider's lists
    dialog.model.setCurrentText(wanted.model)
    dialog.voice.setCurrentText(wanted.voice)
    dialog.language.setText(wanted.language)
    dialog.vad.setCurrentIndex(dialog.vad.findData(wanted.vad))
    dialog.eagerness.setCurrentIndex(dialog.eagerness.findData(wanted.eagerness))
    dialog.noise_reduction.setCurrentIndex(dialog.noise_reduction.findData(wanted.noise_reduction))
    dialog.echo_cancellation.setChecked(False)
    dialog.noise_suppression.setChecked(False)
    dialog.echo_in_push_to_talk.setChecked(True)
    dialog.instructions.setPlainText(wanted.instructions)
    dialog.transcription_model.setText(wanted.transcription_model)
    dialog.metrics_url.setText(wanted.metrics_url)
    dialog.turn_server.setText(wanted.turn_server)
    dialog.turn_username.setText(wanted.turn_username)
    dialog.turn_password.setText(TURN_PASSWORD)
    dialog.retention.setValue(wanted.transcript_retention_days)
    dialog.legacy_calls.setChecked(True)
    dialog.global_ptt_key.setText(wanted.global_ptt_key)
    dialog.close_to_tray.setChecked(True)
    dialog.api_key.setText(API_KEY)
    assert dialog.api_key.echoMode() == dialog.api_key.EchoMode.Password
    submitted: list[config.SettingsChange] = []
    dialog.submitted.connect(submitted.append)
    dialog.submit()
    assert not config.settings_path().exists() and memory_keyring.store == {}  # the dialog wrote nothing
    (change,) = submitted
    config.persist(change)  # what the app's one writer does with it

    loaded = load_settings()
    shown = {f.name for f in dataclasses.fields(Settings)} - {"hands_free", "input_device", "output_device",
                                                              "window_geometry", "load_warnings"}
    for name in shown:
        assert getattr(loaded, name) == getattr(wanted, name), name
    assert config.get_api_key("azure") == API_KEY
    assert config.get_turn_password() == TURN_PASSWORD

    # Reopened, the dialog shows what was saved, key included (masked).
    again = SettingsDialog(loaded, StoredSecrets(config.stored_keys(), config.get_turn_password() or ""))
    qtbot.addWidget(again)
    assert again.settings() == loaded
    assert again.api_key.text() == API_KEY
    assert again.turn_password.text() == TURN_PASSWORD
    assert again.change().api_keys == {} and again.change().turn_password is None  # nothing changed: nothing written

    # The secrets are in no file under the config dir (nor anywhere in the private home).
    files = [p for p in private_home.rglob("*") if p.is_file()]
    assert any(p.parent == paths.config_dir() for p in files), "the settings file was not written"
    for path in files:
        data = path.read_bytes()
        assert API_KEY.encode() not in data, path
        assert TURN_PASSWORD.encode() not in data, path


def test_fields_the_dialog_does_not_show_pass_through(qtbot, private_home: Path, memory_keyring) -> None:
    application()
    original = _every_field_changed()
    dialog = SettingsDialog(original)
    qtbot.addWidget(dialog)
    config.persist(dialog.change())
    loaded = load_settings()
    for name in ("hands_free", "input_device", "output_device", "window_geometry"):
        assert getattr(loaded, name) == getattr(original, name), name


def test_clearing_the_key_removes_it_from_the_keyring(qtbot, private_home: Path, memory_keyring) -> None:
    application()
    config.set_api_key("openai", API_KEY)
    dialog = SettingsDialog(dataclasses.replace(Settings(), provider="openai"), StoredSecrets(config.stored_keys()))
    qtbot.addWidget(dialog)
    assert dialog.api_key.text() == API_KEY
    dialog.api_key.clear()
    config.persist(dialog.change())
    assert config.get_api_key("openai") is None
    assert memory_keyring.store == {}


def test_a_corrupt_settings_file_is_set_aside_and_said_in_the_window(qtbot, private_home: Path) -> None:
    config.settings_path().write_text("{not json", encoding="utf-8")
    window = build_window(load_settings())
    qtbot.addWidget(window)
    assert window.banner.isVisibleTo(window)
    assert "set aside" in window.banner._label.text()
    assert list(paths.config_dir().glob("settings.json.corrupt-*"))
