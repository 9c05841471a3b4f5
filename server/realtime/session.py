"""The session a call runs with: instructions, voice, turn detection, function tools.

One validator serves both the client_secrets body and the session.update event, so
the two accept exactly the same shapes. Unknown fields are ignored (OpenAI's session
has many this server does not use); known fields with the wrong type are refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
VAD_TYPES = ("server_vad", "semantic_vad")
NOISE_REDUCTION_TYPES = ("near_field", "far_field")
# semantic_vad runs on this server's own VAD: eagerness picks how long a pause ends the turn.
EAGERNESS_SILENCE_MS = {"low": 900, "medium": 500, "auto": 500, "high": 250}
VOICE_LOCKED_MESSAGE = "Cannot update a conversation's voice if assistant audio is present."
TOOL_CHOICES = ("auto", "none", "required")
MAX_TOOLS = 128


class SessionError(ValueError):
    """A session field has the wrong type or value; param names it (dotted path)."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class TurnDetection:
    """Hands-free settings: OpenAI's server_vad fields, or semantic_vad's eagerness."""

    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    eagerness: str = "auto"  # semantic_vad only

    def to_json(self) -> dict[str, Any]:
        # Each type reports only the fields OpenAI's model of it has.
        if self.type == "semantic_vad":
            return {"type": self.type, "eagerness": self.eagerness, "create_response": True,
                    "interrupt_response": True}
        return {"type": self.type, "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms, "create_response": True,
                "interrupt_response": True}


@dataclass(frozen=True)
class FunctionTool:
    """A function tool the client declared; the offline assistant calls only names it knows."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters}


@dataclass(frozen=True)
class SessionConfig:
    model: str = DEFAULT_MODEL
    instructions: str = ""
    voice: str = DEFAULT_VOICE
    # OpenAI's default is hands-free, so its unchanged browser quick-start works; the
    # desktop app asks for push-to-talk (None) in its client_secrets request.
    turn_detection: TurnDetection | None = TurnDetection()
    transcription_model: str | None = None
    transcription_language: str | None = None  # accepted and reported; the recogniser is English only
    noise_reduction: str | None = None  # accepted and reported; this server does no noise reduction
    tools: tuple[FunctionTool, ...] = ()
    # "auto" | "none" | "required", or {"type": "function", "name": …} (treated as "auto").
    tool_choice: str | dict[str, str] = "auto"

    @property
    def tool_names(self) -> frozenset[str]:
        """The tools the assistant may call now: none when tool_choice is "none"."""
        if self.tool_choice == "none":
            return frozenset()
        return frozenset(tool.name for tool in self.tools)

    def to_json(self, session_id: str, expires_at: float | None = None) -> dict[str, Any]:
        transcription = {key: value for key, value in (("model", self.transcription_model),
                                                       ("language", self.transcription_language)) if value} or None
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": self.instructions,
            "expires_at": int(expires_at) if expires_at else 0,
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000},
                          "transcription": transcription,
                          "noise_reduction": {"type": self.noise_reduction} if self.noise_reduction else None,
                          "turn_detection": self.turn_detection.to_json() if self.turn_detection else None},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": self.voice, "speed": 1.0},
            },
            "tools": [tool.to_json() for tool in self.tools],
            "tool_choice": self.tool_choice,
        }


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(12)


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], param: str) -> Any:
    value = obj.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SessionError(param, f"'{param}' must be {names}, got {type(value).__name__}")
    return value


def _number(obj: dict[str, Any], name: str, param: str, low: float, high: float) -> float | None:
    value = _field(obj, name, (int, float), param)
    if value is not None and not low <= value <= high:
        raise SessionError(param, f"'{param}' must be between {low} and {high}, got {value}")
    return value


def _turn_detection(raw: Any, current: TurnDetection | None, param: str) -> TurnDetection | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SessionError(param, f"'{param}' must be an object or null")
    # A tuning without a type keeps the current type.
    kind = _field(raw, "type", str, f"{param}.type") or (current.type if current else "server_vad")
    if kind not in VAD_TYPES:
        raise SessionError(f"{param}.type", f"'{param}.type' must be one of {', '.join(VAD_TYPES)}, got {kind!r}")
    # Settings carry over only within one type (semantic_vad's silence comes from its eagerness).
    base = current if current is not None and current.type == kind else TurnDetection(type=kind)
    if kind == "semantic_vad":
        eagerness = _field(raw, "eagerness", str, f"{param}.eagerness") or base.eagerness
        if eagerness not in EAGERNESS_SILENCE_MS:
            raise SessionError(f"{param}.eagerness", f"'{param}.eagerness' must be one of "
                                                     f"{', '.join(EAGERNESS_SILENCE_MS)}, got {eagerness!r}")
        return TurnDetection(type=kind, silence_duration_ms=EAGERNESS_SILENCE_MS[eagerness], eagerness=eagerness)
    threshold = _number(raw, "threshold", f"{param}.threshold", 0.0, 1.0)
    padding = _number(raw, "prefix_padding_ms", f"{param}.prefix_padding_ms", 0, 5000)
    silence = _number(raw, "silence_duration_ms", f"{param}.silence_duration_ms", 60, 10000)
    return TurnDetection(
        type=kind,
        threshold=base.threshold if threshold is None else float(threshold),
        prefix_padding_ms=base.prefix_padding_ms if padding is None else int(padding),
        silence_duration_ms=base.silence_duration_ms if silence is None else int(silence),
    )


def _noise_reduction(raw: Any, param: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SessionError(param, f"'{param}' must be an object or null")
    kind = _field(raw, "type", str, f"{param}.type")
    if kind not in NOISE_REDUCTION_TYPES:
        raise SessionError(f"{param}.type", f"'{param}.type' must be one of {', '.join(NOISE_REDUCTION_TYPES)}, "
                                            f"got {kind!r}")
    return kind


def _tools(raw: Any, param: str) -> tuple[FunctionTool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SessionError(param, f"'{param}' must be a list")
    if len(raw) > MAX_TOOLS:
        raise SessionError(param, f"'{param}' may hold at most {MAX_TOOLS} tools, got {len(raw)}")
    tools: list[FunctionTool] = []
    for i, entry in enumerate(raw):
        where = f"{param}[{i}]"
        if not isinstance(entry, dict):
            raise SessionError(where, f"'{where}' must be an object")
        kind = _field(entry, "type", str, f"{where}.type")
        if kind != "function":
            raise SessionError(f"{where}.type", f"'{where}.type' must be 'function' (the local server runs no "
                                                f"MCP tools), got {kind!r}")
        name = _field(entry, "name", str, f"{where}.name")
        if not name:
            raise SessionError(f"{where}.name", f"'{where}.name' must be a non-empty string")
        if any(tool.name == name for tool in tools):
            raise SessionError(f"{where}.name", f"'{where}.name': {name!r} is declared twice")
        description = _field(entry, "description", str, f"{where}.description") or ""
        parameters = _field(entry, "parameters", dict, f"{where}.parameters") or {}
        tools.append(FunctionTool(name, description, parameters))
    return tuple(tools)


def _tool_choice(raw: Any, param: str) -> str | dict[str, str]:
    if isinstance(raw, str) and raw in TOOL_CHOICES:
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return {"type": "function", "name": raw["name"]}
    raise SessionError(param, f"'{param}' must be one of {', '.join(TOOL_CHOICES)} or "
                              "{\"type\": \"function\", \"name\": …}")


def apply_session_update(current: SessionConfig, raw: Any, param: str = "session", *,
                         voice_locked: bool = False) -> SessionConfig:
    """current with the fields of raw applied; raises SessionError on a bad field.

    voice_locked: assistant audio has been sent, so the voice may no longer change
    (OpenAI refuses the whole update with code cannot_update_voice).
    """
    if not isinstance(raw, dict):
        raise SessionError(param, f"'{param}' must be an object")
    kind = _field(raw, "type", str, f"{param}.type")
    if kind is not None and kind != "realtime":
        raise SessionError(f"{param}.type", f"'{param}.type' must be 'realtime', got {kind!r}")
    changes: dict[str, Any] = {}
    for name in ("model", "instructions"):
        value = _field(raw, name, str, f"{param}.{name}")
        if value is not None:
            changes[name] = value
    # Older (beta) clients put voice and turn_detection at the top level.
    voice = _field(raw, "voice", str, f"{param}.voice")
    if voice is not None:
        changes["voice"] = voice
    if "turn_detection" in raw:
        changes["turn_detection"] = _turn_detection(raw["turn_detection"], current.turn_detection,
                                                    f"{param}.turn_detection")
    audio = _field(raw, "audio", dict, f"{param}.audio") or {}
    audio_in = _field(audio, "input", dict, f"{param}.audio.input") or {}
    audio_out = _field(audio, "output", dict, f"{param}.audio.output") or {}
    if "turn_detection" in audio_in:
        changes["turn_detection"] = _turn_detection(audio_in["turn_detection"], current.turn_detection,
                                                    f"{param}.audio.input.turn_detection")
    if "transcription" in audio_in:
        transcription = _field(audio_in, "transcription", dict, f"{param}.audio.input.transcription") or {}
        changes["transcription_model"] = _field(transcription, "model", str,
                                                f"{param}.audio.input.transcription.model")
        changes["transcription_language"] = _field(transcription, "language", str,
                                                   f"{param}.audio.input.transcription.language")
    if "noise_reduction" in audio_in:
        changes["noise_reduction"] = _noise_reduction(audio_in["noise_reduction"],
                                                      f"{param}.audio.input.noise_reduction")
    voice = _field(audio_out, "voice", str, f"{param}.audio.output.voice")
    if voice is not None:
        changes["voice"] = voice
    if "tools" in raw:
        changes["tools"] = _tools(raw["tools"], f"{param}.tools")
    if raw.get("tool_choice") is not None:
        changes["tool_choice"] = _tool_choice(raw["tool_choice"], f"{param}.tool_choice")
    if voice_locked and changes.get("voice", current.voice) != current.voice:
        raise SessionError(f"{param}.audio.output.voice", VOICE_LOCKED_MESSAGE, code="cannot_update_voice")
    return replace(current, **changes)
