"""Settings file and secrets: round trip, corrupt files set aside, keys only in the keyring."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend
from keyring.errors import NoKeyringError

from core import config
from core.config import Settings, load_settings, save_settings
from base.errors import ConfigError
from base.logs import redact
from memory_keyring import MemoryKeyring, use_keyring, use_memory_keyring


class NoKeyring(KeyringBackend):
    """Behaves like keyring's 'fail' backend: every call raises NoKeyringError."""

    priority = 0  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise NoKeyringError("no backend")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise NoKeyringError("no backend")

    def delete_password(self, service: str, username: str) -> None:
        raise NoKeyringError("no backend")


@pytest.fixture(autouse=True)
def no_secrets_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDRA_API_KEY", raising=False)
    monkeypatch.delenv("SANDRA_TURN_PASSWORD", raising=False)


@pytest.fixture
def memory_keyring():
    with use_memory_keyring() as backend:
        yield backend


@pytest.fixture
def no_keyring():
    with use_keyring(NoKeyring()):
        yield


def assert_in_no_file(root: Path, secret: str) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def every_field_changed() -> Settings:
    """A Settings in which every saved field differs from its default."""
    changed = Settings(
        provider="azure",
        base_url="https://example.test/v1",
        token_url="https://example.test/token",
        azure_resource="my-resource",
        model="my-deployment",
        voice="cedar",
        instructions="Be terse.\nÜnïcödé too.",
        transcription_model="whisper-1",
        metrics_url="http://127.0.0.1:9/api/sandra/metrics",
        turn_server="turn.example.test",
        turn_username="alice",
        hands_free=True,
        input_device="USB mic",
        output_device="Headphones",
        transcript_retention_days=7,
        window_geometry="AdnQywADAAAAAAGQ",
        legacy_calls_endpoint=True,
        vad="semantic_vad",
        eagerness="low",
        noise_reduction="far_field",
        language="fr",
        echo_cancellation=False,
        noise_suppression=False,
        echo_in_push_to_talk=True,
        close_to_tray=True,
        global_ptt_key="Ctrl+Shift+F12",
        mcp_servers=(config.McpServerSettings("files", command="mcp-files", args=("--root", "~"), env=(("K", "v"),),
                                              disabled_tools=("delete",)),
                     config.McpServerSettings("web", transport="http", url="http://127.0.0.1:9/mcp",
                                              header_name="Authorization", enabled=False)),
        tool_approvals=(("open_url", "always"), ("files__read", "session")),
    )
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if f.name != "load_warnings":
            assert getattr(changed, f.name) != getattr(defaults, f.name), f.name
    return changed


def test_missing_file_gives_defaults_on_the_local_provider(private_home: Path) -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.provider == "local"
    assert settings.model == "gpt-realtime" and settings.voice == "marin"
    assert settings.transcript_retention_days == 90
    assert settings.load_warnings == ()


def test_round_trip_of_every_field(private_home: Path) -> None:
    original = every_field_changed()
    save_settings(original)
    assert config.settings_path().is_relative_to(private_home)
    loaded = load_settings()
    assert loaded == original
    for f in dataclasses.fields(Settings):
        assert getattr(loaded, f.name) == getattr(original, f.name), f.name
    assert loaded.load_warnings == ()


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    save_settings(Settings(voice="first"), path)
    save_settings(Settings(voice="second"), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]
    assert json.loads(path.read_text())["voice"] == "second"


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "settings.json"
    save_settings(Settings(voice="kept"), path)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(config.os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_settings(Settings(voice="lost"), path)
    monkeypatch.undo()
    assert load_settings(path).voice == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_invalid_values_are_refused_on_save(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        save_settings(Settings(provider="nonsense"), tmp_path / "s.json")
    with pytest.raises(ConfigError):
        save_settings(Settings(transcript_retention_days=-1), tmp_path / "s.json")


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", '"text"', "", "[" * 100_000])
def test_corrupt_file_is_set_aside_with_a_warning(tmp_path: Path, content: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(content)
    settings = load_settings(path)
    assert settings == Settings()
    assert len(settings.load_warnings) == 1 and "set aside" in settings.load_warnings[0]
    assert not path.exists()
    aside = list(tmp_path.glob("settings.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == content
    # The next start is clean: no crash loop, no second warning.
    assert load_settings(path).load_warnings == ()


def test_wrong_types_fall_back_per_field_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({
        "provider": "openai",
        "voice": 42,
        "hands_free": "yes",
        "transcript_retention_days": True,
        "input_device": ["a"],
        "model": "kept-model",
        "someday_setting": {"x": 1},
    }))
    settings = load_settings(path)
    assert settings.provider == "openai" and settings.model == "kept-model"
    assert settings.voice == "marin" and settings.hands_free is False
    assert settings.transcript_retention_days == 90 and settings.input_device is None
    assert len(settings.load_warnings) == 4
    assert path.exists()  # a partly good file is kept, not set aside


def test_unknown_provider_falls_back_to_local(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"provider": "martian"}))
    assert load_settings(path).provider == "local"


# --- secrets -----------------------------------------------------------------------------


def test_api_key_lives_in_the_keyring_and_in_no_file(private_home: Path, memory_keyring: MemoryKeyring) -> None:
    key = "sk-test-NEVER-IN-A-FILE-0123456789"
    config.set_api_key("openai", key)
    save_settings(every_field_changed())
    assert config.get_api_key("openai") == key
    assert memory_keyring.store == {("sandra-desktop", "openai"): key}
    assert config.get_api_key("azure") is None
    assert_in_no_file(private_home, key)
    assert key not in redact(f"using {key}")


def test_environment_key_wins(memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch) -> None:
    config.set_api_key("openai", "keyring-key-123456")
    monkeypatch.setenv("SANDRA_API_KEY", "environment-key-123456")
    assert config.get_api_key("openai") == "environment-key-123456"
    assert "environment-key-123456" not in redact("key environment-key-123456")


def test_delete_api_key(memory_keyring: MemoryKeyring) -> None:
    config.set_api_key("azure", "azure-key-123456")
    config.delete_api_key("azure")
    assert config.get_api_key("azure") is None
    config.delete_api_key("azure")  # deleting what is not there is fine


def test_unknown_provider_and_empty_key_are_config_errors(memory_keyring: MemoryKeyring) -> None:
    with pytest.raises(ConfigError):
        config.get_api_key("martian")
    with pytest.raises(ConfigError):
        config.set_api_key("openai", "")


def test_without_a_keyring_get_is_none_and_set_says_what_to_do(no_keyring: None) -> None:
    assert config.get_api_key("openai") is None
    with pytest.raises(ConfigError) as info:
        config.set_api_key("openai", "sk-some-key-0123456789")
    assert "SANDRA_API_KEY" in str(info.value)
    config.delete_api_key("openai")  # no crash either
    assert config.get_turn_password() is None


def test_without_a_keyring_the_environment_still_works(no_keyring: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDRA_API_KEY", "env-only-key-123456")
    assert config.get_api_key("openai") == "env-only-key-123456"


def test_turn_password_from_environment_or_keyring(
    private_home: Path, memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config.get_turn_password() is None
    config.set_turn_password("turn-pass-in-keyring")
    save_settings(every_field_changed())
    assert config.get_turn_password() == "turn-pass-in-keyring"
    monkeypatch.setenv("SANDRA_TURN_PASSWORD", "turn-pass-from-env")
    assert config.get_turn_password() == "turn-pass-from-env"
    assert_in_no_file(private_home, "turn-pass-in-keyring")
    config.delete_turn_password()
    monkeypatch.delenv("SANDRA_TURN_PASSWORD")
    assert config.get_turn_password() is None


def test_settings_file_is_plain_json_with_a_version(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    save_settings(Settings(), path)
    data = json.loads(path.read_text())
    assert data["version"] == config.SETTINGS_VERSION
    assert "load_warnings" not in data
    assert os.stat(path).st_size < 4096
