"""`sandra talk`: one call from the command line, driving the same engine as the window.

Progress goes to stderr; the last stdout line is a JSON summary. Exit 0 on success,
1 with one clear line on failure, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from base.pcm import SILENCE
from core.audio import AudioIO, DeviceAudio, FileAudio, write_wav
from core.call.state import Phase
from base.errors import SandraError
from core.call.engine import CallEngine
from core.config import Settings, load_settings, mcp_header_values, read_secrets
from core.call.events import (EngineEvent, LatencyMeasured, Problem, ServerEvent, StateChanged, ToolActivity,
                              TranscriptDelta)
from core.tools.builtin import Timers, builtin_tools
from core.tools.registry import Approver, Tool, ToolRegistry

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 30.0  # seconds from release to the end of the answer
CONNECT_TIMEOUT = 90.0  # long enough for the whole reconnect schedule


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandra talk", description="Make one call from the command line.")
    parser.add_argument("--provider", default=None, help="local (default), openai, azure, or a base URL such as http://127.0.0.1:8765/v1")
    parser.add_argument("--wav", type=Path, help="send this WAV file as one push-to-talk turn")
    parser.add_argument("--text", action="append", default=[], metavar="TEXT",
                        help="send a typed turn (repeatable: each is answered before the next)")
    parser.add_argument("--allow-tools", default="", metavar="NAME[,NAME]",
                        help="tools that change something (open_url, MCP tools) may run; all others are refused")
    parser.add_argument("--out", type=Path, help="write the answer's audio to this WAV file")
    parser.add_argument("--events", type=Path, help="write every state change, latency and server event as JSON lines")
    parser.add_argument("--hands-free", action="store_true", help="let the server detect speech (server VAD)")
    parser.add_argument("--duration", type=float, help="with --hands-free: stay in the call this many seconds")
    parser.add_argument("--metrics-url", help="post latency batches to this metrics receiver")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def settings_for(args: argparse.Namespace) -> Settings:
    """The saved settings with this command's choices on top (nothing is saved back)."""
    settings = load_settings()
    provider = args.provider or settings.provider
    if provider in ("local", "openai", "azure"):
        changes: dict[str, Any] = {"provider": provider}
    elif provider.startswith(("http://", "https://")):
        changes = {"provider": "custom", "base_url": provider.rstrip("/")}
    else:
        raise SandraError(f"Unknown provider {provider!r}: use local, openai, azure or a base URL (http://…/v1).")
    changes["hands_free"] = bool(args.hands_free)
    if args.metrics_url:
        changes["metrics_url"] = args.metrics_url
    return dataclasses.replace(settings, **changes)



class EventLog:
    """The --events file: one JSON object per line, flushed as it happens."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream

    def __call__(self, event: EngineEvent) -> None:
        if self._stream is None:
            return
        if isinstance(event, StateChanged):
            line: dict[str, Any] = event.state.to_json()
        elif isinstance(event, LatencyMeasured):
            line = {"type": "latency", "name": event.name, "ms": round(event.ms, 2)}
        elif isinstance(event, ServerEvent):
            line = {"type": "server_event", "event": event.type}
        elif isinstance(event, Problem):
            line = {"type": "problem", "message": event.message, "fatal": event.fatal}
        elif isinstance(event, ToolActivity):
            line = {"type": "tool", "call_id": event.call_id, "name": event.name, "arguments": event.arguments,
                    "output": event.output, "failed": event.failed}
        else:
            return
        self._stream.write(json.dumps(line) + "\n")
        self._stream.flush()


class Progress:
    """Human progress on stderr, and the turn-level events `talk` waits on."""

    def __init__(self, quiet: bool = False) -> None:
        self.response_done = asyncio.Event()
        self.answer_audio_done = asyncio.Event()
        self.assistant_said = asyncio.Event()  # a complete assistant transcript arrived
        self.connected_or_ended = asyncio.Event()
        self.tools: list[dict[str, Any]] = []  # finished tool calls, for the summary
        self._quiet = quiet

    def _say(self, text: str) -> None:
        if not self._quiet:
            print(text, file=sys.stderr)

    def __call__(self, event: EngineEvent) -> None:
        if isinstance(event, StateChanged):
            self._say(f"sandra: {event.state.describe()}")
            if event.state.phase in (Phase.CONNECTED, Phase.ENDED):
                self.connected_or_ended.set()
        elif isinstance(event, TranscriptDelta) and event.final:
            self._say(f"{event.role}: {event.text}")
            if event.role == "assistant":
                self.assistant_said.set()
        elif isinstance(event, ToolActivity):
            if event.output is None:
                self._say(f"sandra: tool {event.name}({event.arguments}) running")
            else:
                self._say(f"sandra: tool {event.name} {'failed' if event.failed else 'done'}: {event.output}")
                self.tools.append({"name": event.name, "arguments": event.arguments, "output": event.output,
                                   "failed": event.failed})
        elif isinstance(event, ServerEvent):
            if event.type == "response.done":
                self.response_done.set()
            elif event.type in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
                self.answer_audio_done.set()
        elif isinstance(event, Problem):
            self._say(f"sandra: {event.message}")


def summary(engine: CallEngine, progress: Progress) -> dict[str, Any]:
    messages = engine.history.messages()
    return {
        "user": [m["content"] for m in messages if m["role"] == "user"],
        "assistant": [m["content"] for m in messages if m["role"] == "assistant"],
        "tools": progress.tools,
        "latency": {name: engine.telemetry.stats(name) for name in engine.telemetry.names()},
        "reconnects": engine.reconnects,
        "state": engine.state.phase.value,
    }


async def wait_connected(engine: CallEngine, progress: Progress) -> None:
    while engine.state.phase is not Phase.CONNECTED:
        if engine.state.phase is Phase.ENDED:
            raise SandraError(engine.state.reason or "The call ended before it connected.")
        progress.connected_or_ended.clear()
        await asyncio.wait_for(progress.connected_or_ended.wait(), CONNECT_TIMEOUT)


async def one_turn(engine: CallEngine, audio: FileAudio, progress: Progress) -> None:
    assert audio.source is not None
    progress.response_done.clear()
    progress.answer_audio_done.clear()
    engine.press()
    await asyncio.wait_for(audio.source.finished.wait(), audio.source.duration + 10)
    await asyncio.sleep(0.1)  # the last frames are in flight
    engine.release()
    await asyncio.wait_for(progress.response_done.wait(), ANSWER_TIMEOUT)
    await asyncio.wait_for(progress.answer_audio_done.wait(), ANSWER_TIMEOUT)
    await asyncio.sleep(0.3)  # let the playout drain what the jitter buffer still holds


async def text_turn(engine: CallEngine, text: str, progress: Progress) -> None:
    """A typed turn, answered (tool calls included) in words and, to its end, in voice."""
    progress.assistant_said.clear()
    progress.answer_audio_done.clear()
    engine.send_text(text)
    await asyncio.wait_for(progress.assistant_said.wait(), ANSWER_TIMEOUT)
    await asyncio.wait_for(progress.answer_audio_done.wait(), ANSWER_TIMEOUT)
    await asyncio.sleep(0.3)  # let the playout drain what the jitter buffer still holds


def allow_only(names: str) -> Approver:
    """talk's approver: nobody to ask, so a tool that changes something runs only if named."""
    allowed = {name.strip() for name in names.split(",") if name.strip()}

    async def approve(tool: Tool, _arguments: Mapping[str, Any]) -> bool:
        if tool.name not in allowed:
            print(f"sandra: refused {tool.name} (allow it with --allow-tools {tool.name})", file=sys.stderr)
        return tool.name in allowed

    return approve


def _ring(label: str) -> None:
    print(f"sandra: timer{' ' + repr(label) if label else ''} is up", file=sys.stderr, flush=True)


def _silence_wav(directory: str) -> Path:
    """A microphone for typed turns: a moment of silence (the button is never pressed)."""
    path = Path(directory) / "silence.wav"
    write_wav(path, SILENCE)
    return path


async def _interactive(engine: CallEngine) -> None:
    loop = asyncio.get_running_loop()
    print("sandra: press Enter to start talking, Enter again to send; Ctrl+D to hang up.", file=sys.stderr)
    talking = False
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        talking = not talking
        (engine.press if talking else engine.release)()
        print("sandra: listening…" if talking else "sandra: sent", file=sys.stderr)


async def run_talk(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    loop = asyncio.get_running_loop()
    secrets = await loop.run_in_executor(None, read_secrets, settings.provider)
    scratch = tempfile.TemporaryDirectory(prefix="sandra-talk-")
    if args.wav or args.text:
        audio: AudioIO = FileAudio(args.wav or _silence_wav(scratch.name), args.out)
    else:
        audio = DeviceAudio(settings.input_device, settings.output_device)
    events_file = open(args.events, "w", encoding="utf-8") if args.events else None
    timers = Timers(on_ring=_ring)
    registry = ToolRegistry()
    registry.add(builtin_tools(timers))
    engine = CallEngine(settings, audio=audio, secrets=secrets, tools=registry, approve=allow_only(args.allow_tools))
    progress = Progress()
    engine.subscribe(EventLog(events_file))
    engine.subscribe(progress)
    servers = tuple(server for server in settings.mcp_servers if server.enabled)
    mcp = None
    if servers:
        from core.tools.mcp_bridge import McpBridge  # the `mcp` package: loaded only when servers are set

        headers = await loop.run_in_executor(None, mcp_header_values, servers)
        mcp = McpBridge(servers, registry, lambda message: progress(Problem(message)), header_values=headers)
    try:
        await engine.start()
        if mcp is not None:
            await mcp.start()
        await wait_connected(engine, progress)
        if args.wav:
            assert isinstance(audio, FileAudio)
            await one_turn(engine, audio, progress)
        for text in args.text:
            await text_turn(engine, text, progress)
        if args.duration:
            await asyncio.sleep(args.duration)
        elif not args.wav and not args.text:
            await _interactive(engine)
        if engine.state.phase is Phase.ENDED:
            raise SandraError(engine.state.reason or "The call ended.")
    except asyncio.TimeoutError:
        raise SandraError("No answer came in time; the provider may be overloaded or unreachable.") from None
    finally:
        timers.cancel_all()
        if mcp is not None:
            await mcp.stop()
        await engine.close()
        scratch.cleanup()
        print(json.dumps(summary(engine, progress)), flush=True)
        if events_file is not None:
            events_file.close()
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.out and not (args.wav or args.text):
        build_parser().error("--out needs --wav or --text")
    if args.duration is not None and args.duration <= 0:
        build_parser().error("--duration must be positive")
    from base.logs import setup_logging

    setup_logging(args.verbose, log_file="talk.log")
    try:
        return asyncio.run(run_talk(args))
    except SandraError as exc:
        print(f"sandra talk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
