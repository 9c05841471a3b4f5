"""Settings (a JSON file in the user's config dir) and secrets (keyring or environment).

Secrets never enter the settings file: API keys and the TURN password live in the
system keyring, or come from the environment (SANDRA_API_KEY, SANDRA_TURN_PASSWORD),
which wins so scripts and tests need no keyring. A settings file that cannot be read
is set aside and the app starts on defaults with a warning, never in a crash loop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base import paths
from base.errors import ConfigError
from base.logs import register_secret
from core.provider_catalog import DEFAULT_KIND, KINDS

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
SETTINGS_VERSION = 1
KEYRING_SERVICE = "sandra-desktop"
# Keyring user name for the TURN password, beside one entry per provider name.
TURN_KEYRING_USER = "turn"
MCP_KEYRING_PREFIX = "mcp:"  # + the server's name: the keyring user of its HTTP header value
ENV_API_KEY = "SANDRA_API_KEY"
ENV_TURN_PASSWORD = "SANDRA_TURN_PASSWORD"
MAX_RETENTION_DAYS = 36_500

DEFAULT_INSTRUCTIONS = (
    "You are Sandra, a friendly voice assistant. Answer briefly and clearly, "
    "in the language the user speaks."
)


# Fields whose value is one of a few words.
CHOICES: dict[str, tuple[str, ...]] = {
    "provider": tuple(KINDS),
    "vad": ("server_vad", "semantic_vad"),
    "eagerness": ("auto", "low", "medium", "high"),
    "noise_reduction": ("", "near_field", "far_field"),
}


MCP_TRANSPORTS = ("stdio", "http")
# When a side-effecting tool may run without asking (core.tools.registry.ApprovalPolicy's values).
APPROVAL_POLICIES = ("ask", "session", "always")


@dataclass(frozen=True)
class McpServerSettings:
    """One MCP server the user configured (Settings → Tools); started by core/tools/mcp_bridge.py."""

    name: str  # shown to the user and the prefix of its tools' names
    transport: str = "stdio"  # "stdio" or "http" (streamable HTTP)
    command: str = ""  # stdio
    args: tuple[str, ...] = ()  # stdio
    env: tuple[tuple[str, str], ...] = ()  # stdio, (name, value) over the default environment
    url: str = ""  # http
    header_name: str = ""  # http, e.g. "Authorization"; its value is a secret, kept in the keyring
    enabled: bool = True  # off: the server is not started and offers no tool
    disabled_tools: tuple[str, ...] = ()  # the server's own tool names left out

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["env"] = dict(self.env)
        return data

    @classmethod
    def from_json(cls, data: Any) -> McpServerSettings | None:
        """The server a saved object describes; None if it is not one (wrong keys or types)."""
        if not isinstance(data, dict) or not set(data) <= {f.name for f in dataclasses.fields(cls)}:
            return None
        env = data.get("env", {})
        lists = (data.get("args", []), data.get("disabled_tools", []))
        if not isinstance(env, dict) or not all(isinstance(value, list) for value in lists):
            return None  # tuple("text") would split a string into letters
        try:
            server = cls(**{**data, "args": tuple(data.get("args", ())), "env": tuple(env.items()),
                            "disabled_tools": tuple(data.get("disabled_tools", ()))})
        except TypeError:
            return None
        return server if server.valid() else None

    def valid(self) -> bool:
        def strings(values: Any) -> bool:
            return isinstance(values, tuple) and all(isinstance(v, str) for v in values)

        return (isinstance(self.name, str) and bool(self.name.strip()) and self.transport in MCP_TRANSPORTS
                and all(isinstance(v, str) for v in (self.command, self.url, self.header_name))
                and isinstance(self.enabled, bool) and strings(self.args) and strings(self.disabled_tools)
                and isinstance(self.env, tuple) and all(isinstance(pair, tuple) and len(pair) == 2 and strings(pair)
                                                        for pair in self.env))


@dataclass(frozen=True)
class Settings:
    """What the user chose. Frozen: a change is a new Settings, written by the app alone
    (core/config.save_settings from gui/app.py or `talk`), handed to the engine."""

    provider: str = DEFAULT_KIND
    base_url: str = ""
    token_url: str = ""
    azure_resource: str = ""
    model: str = "gpt-realtime"
    voice: str = "marin"
    instructions: str = DEFAULT_INSTRUCTIONS
    transcription_model: str = "gpt-4o-mini-transcribe"
    metrics_url: str = ""
    turn_server: str = ""
    turn_username: str = ""
    hands_free: bool = False
    input_device: str | None = None
    output_device: str | None = None
    transcript_retention_days: int = 90
    # base64 of Qt's saveGeometry(); opaque here.
    window_geometry: str | None = None
    legacy_calls_endpoint: bool = False
    # Hands-free turn detection and the cloud's own input options (issue: hands-free).
    vad: str = "server_vad"
    eagerness: str = "auto"
    noise_reduction: str = ""  # "" = off
    language: str = ""  # transcription language (ISO-639-1); "" = let the server guess
    echo_cancellation: bool = True  # on the microphone path in hands-free
    noise_suppression: bool = True
    echo_in_push_to_talk: bool = False  # push-to-talk usually needs none (Sandra is quiet while you hold)
    close_to_tray: bool = False  # the window's close button hides it to the tray (issue #18)
    global_ptt_key: str = "Ctrl+Alt+Space"  # push-to-talk while another app has focus; "" = off
    # Tools (issue #17): MCP servers started with each call, and the tools the user always allows.
    mcp_servers: tuple[McpServerSettings, ...] = ()
    tool_approvals: tuple[tuple[str, str], ...] = ()  # (tool name, one of APPROVAL_POLICIES)
    # Problems met while loading, for the window to show; never saved.
    load_warnings: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in _SAVED_FIELDS}
        data["mcp_servers"] = [server.to_json() for server in self.mcp_servers]
        data["version"] = SETTINGS_VERSION
        return data

    def approval(self, tool: str) -> str:
        """The approval policy saved for a tool ("ask" when none is)."""
        return dict(self.tool_approvals).get(tool, "ask")


_SAVED_FIELDS = tuple(f for f in dataclasses.fields(Settings) if f.name != "load_warnings")
_DEFAULTS = Settings()


def _valid(name: str, value: Any) -> bool:
    """Whether `value` may stand in field `name` (type and range)."""
    default = getattr(_DEFAULTS, name)
    if name in CHOICES:
        return value in CHOICES[name]
    if name == "transcript_retention_days":
        return type(value) is int and 0 <= value <= MAX_RETENTION_DAYS
    if isinstance(default, bool):
        return isinstance(value, bool)
    if name in ("input_device", "output_device", "window_geometry"):
        return value is None or isinstance(value, str)
    if name == "mcp_servers":
        names = [server.name for server in value] if isinstance(value, tuple) else []
        return (isinstance(value, tuple) and all(isinstance(s, McpServerSettings) and s.valid() for s in value)
                and len(set(names)) == len(names))
    if name == "tool_approvals":
        return isinstance(value, tuple) and all(
            isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and pair[1] in APPROVAL_POLICIES
            for pair in value)
    return isinstance(value, str)


def _decode(name: str, value: Any) -> Any:
    """A saved JSON value as the field's type (lists become tuples); invalid shapes stay invalid."""
    if name == "mcp_servers" and isinstance(value, list):
        servers = [McpServerSettings.from_json(item) for item in value]
        return None if None in servers else tuple(servers)
    if name == "tool_approvals" and isinstance(value, list):
        return tuple(tuple(pair) if isinstance(pair, list) else pair for pair in value)
    return value


def settings_path() -> Path:
    return paths.config_dir() / SETTINGS_FILE


def _set_aside(path: Path, why: str) -> str:
    """Rename a file that cannot be read, so the next start does not fail on it again."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        log.error("cannot set the unreadable settings file aside: %s", exc)
        return f"The settings file {path} could not be read ({why}); Sandra is using default settings."
    log.warning("settings file unreadable (%s); set aside as %s", why, aside)
    return (
        f"The settings file could not be read ({why}). It was set aside as {aside.name} "
        "and Sandra started with default settings."
    )


def load_settings(path: Path | None = None) -> Settings:
    """The saved settings; defaults (the local provider) when there are none.

    Never raises for a bad file: it is set aside (or bad fields reset to their
    defaults) and `load_warnings` on the result says what happened.
    """
    path = path or settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return Settings(load_warnings=(f"The settings file could not be read ({exc}); using default settings.",))
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Settings(load_warnings=(_set_aside(path, f"not valid JSON: {exc}"),))
    if not isinstance(data, dict):
        return Settings(load_warnings=(_set_aside(path, "not a JSON object"),))

    values: dict[str, Any] = {}
    warnings: list[str] = []
    for f in _SAVED_FIELDS:
        if f.name not in data:
            continue
        value = _decode(f.name, data[f.name])
        if _valid(f.name, value):
            values[f.name] = value
        else:
            log.warning("setting %s has an unusable value; using the default", f.name)
            warnings.append(f"The setting '{f.name}' had an unusable value and was reset to its default.")
    return Settings(**values, load_warnings=tuple(warnings))


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write atomically (temporary file, then rename): a crash mid-write leaves the old file."""
    path = path or settings_path()
    for f in _SAVED_FIELDS:
        if not _valid(f.name, getattr(settings, f.name)):
            raise ConfigError(f"The setting '{f.name}' has an invalid value: {getattr(settings, f.name)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings.to_json(), indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- secrets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """What the app read from the keyring (or the environment) for a call; never in a log."""

    api_key: str | None = field(default=None, repr=False)
    turn_password: str | None = field(default=None, repr=False)


def keyring_name() -> str | None:
    """The usable system keyring's name, or None when there is none (blocking: off the loop)."""
    import keyring
    from keyring.backends import fail

    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # a broken D-Bus or backend: as good as none
        log.warning("no keyring (%s)", type(exc).__name__)
        return None
    if isinstance(backend, fail.Keyring):
        return None
    return str(getattr(backend, "name", type(backend).__name__))


def stored_keys() -> dict[str, str]:
    """Every provider's stored key (environment first), for the settings dialog. Blocking."""
    found = {}
    for provider, described in KINDS.items():
        if described.takes_key:
            key = get_api_key(provider)
            if key:
                found[provider] = key
    return found


def read_secrets(provider: str) -> Secrets:
    """The provider's key and the TURN password. Blocking (a keyring may prompt): off the loop.

    The built-in server needs neither (its key is made at start, and it is on loopback, so
    no TURN): the keyring is not touched for it, and cannot prompt or warn."""
    if not KINDS[provider].takes_key:
        return Secrets()
    return Secrets(api_key=get_api_key(provider), turn_password=get_turn_password())


# What a change of secrets says of each: a new value, or "remove it".
REMOVE = ""


@dataclass(frozen=True)
class SettingsChange:
    """What the settings dialog returns: new settings and the secrets the user changed.

    `api_keys` maps a provider to its new key (REMOVE to delete it); providers not named
    keep theirs. `turn_password` None means unchanged. `persist` is the one writer.
    """

    settings: Settings
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)
    turn_password: str | None = field(default=None, repr=False)
    mcp_headers: dict[str, str] = field(default_factory=dict, repr=False)  # MCP server name -> header value


def persist(change: SettingsChange, path: Path | None = None) -> None:
    """Write the keyring, then the settings file. Blocking: call it off the window's thread.

    Raises ConfigError (e.g. no usable keyring) before the file is written.
    """
    for provider, key in change.api_keys.items():
        if key:
            set_api_key(provider, key)
        else:
            delete_api_key(provider)
    if change.turn_password is not None:
        if change.turn_password:
            set_turn_password(change.turn_password)
        else:
            delete_turn_password()
    for server, value in change.mcp_headers.items():
        if value:
            _keyring_set(MCP_KEYRING_PREFIX + server, value, f"header of the MCP server {server!r}", "the keyring")
        else:
            _keyring_delete(MCP_KEYRING_PREFIX + server)
    save_settings(change.settings, path)


def mcp_header_values(servers: tuple[McpServerSettings, ...]) -> dict[str, str]:
    """The stored header value of each HTTP server that names a header. Blocking: off the loop."""
    values = {}
    for server in servers:
        if server.transport == "http" and server.header_name:
            value = _keyring_get(MCP_KEYRING_PREFIX + server.name)
            if value:
                values[server.name] = value
    return values

_NO_KEYRING = (
    "No usable system keyring was found to keep the {what} safe. Install or unlock one "
    "(GNOME Keyring, KWallet, macOS Keychain, Windows Credential Manager), "
    "or set {env} in the environment instead."
)


def _keyring_get(user: str) -> str | None:
    import keyring

    try:
        value = keyring.get_password(KEYRING_SERVICE, user)
    except Exception as exc:  # no backend, locked, D-Bus gone: behave as "not stored"
        log.warning("cannot read the keyring (%s)", type(exc).__name__)
        return None
    register_secret(value)
    return value


def _keyring_set(user: str, value: str, what: str, env: str) -> None:
    import keyring
    from keyring.errors import KeyringError

    register_secret(value)
    try:
        keyring.set_password(KEYRING_SERVICE, user, value)
    except KeyringError as exc:
        raise ConfigError(_NO_KEYRING.format(what=what, env=env)) from exc


def _keyring_delete(user: str) -> None:
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, user)
    except PasswordDeleteError:
        pass  # nothing stored: already the wanted result
    except KeyringError as exc:
        log.warning("cannot delete from the keyring (%s)", type(exc).__name__)


def _check_provider(provider: str) -> None:
    if provider not in KINDS:
        raise ConfigError(f"Unknown provider {provider!r}; choose one of {', '.join(KINDS)}.")


def get_api_key(provider: str) -> str | None:
    """SANDRA_API_KEY if set, else the provider's key from the keyring, else None."""
    _check_provider(provider)
    value = os.environ.get(ENV_API_KEY) or None
    if value:
        register_secret(value)
        return value
    return _keyring_get(provider)


def set_api_key(provider: str, value: str) -> None:
    """Store the key in the keyring; ConfigError if there is no usable keyring."""
    _check_provider(provider)
    if not value:
        raise ConfigError("The API key is empty.")
    _keyring_set(provider, value, "API key", ENV_API_KEY)


def delete_api_key(provider: str) -> None:
    _check_provider(provider)
    _keyring_delete(provider)


def get_turn_password() -> str | None:
    value = os.environ.get(ENV_TURN_PASSWORD) or None
    if value:
        register_secret(value)
        return value
    return _keyring_get(TURN_KEYRING_USER)


def set_turn_password(value: str) -> None:
    if not value:
        raise ConfigError("The TURN password is empty.")
    _keyring_set(TURN_KEYRING_USER, value, "TURN password", ENV_TURN_PASSWORD)


def delete_turn_password() -> None:
    _keyring_delete(TURN_KEYRING_USER)
