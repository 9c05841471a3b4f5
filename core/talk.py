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
from pathlib import Path
from typing import IO, Any

from core.audio import AudioIO, DeviceAudio, FileAudio
from core.call.state import Phase
from base.errors import SandraError
from core.call.engine import CallEngine
from core.config import Settings, load_settings, read_secrets
from core.call.events import EngineEvent, LatencyMeasured, Problem, ServerEvent, StateChanged, TranscriptDelta

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 30.0  # seconds from release to the end of the answer
CONNECT_TIMEOUT = 90.0  # long enough for the whole reconnect schedule


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandra talk", description="Make one call from the command line.")
    parser.add_argument("--provider", default=None, help="local (default), openai, azure, or a base URL such as http://127.0.0.1:8765/v1")
    parser.add_argument("--wav", type=Path, help="send this WAV file as one push-to-talk turn")
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
        else:
            return
        self._stream.write(json.dumps(line) + "\n")
        self._stream.flush()


class Progress:
    """Human progress on stderr, and the turn-level events `talk` waits on."""

    def __init__(self, quiet: bool = False) -> None:
        self.response_done = asyncio.Event()
        self.answer_audio_done = asyncio.Event()
        self.connected_or_ended = asyncio.Event()
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
        elif isinstance(event, ServerEvent):
            if event.type == "response.done":
                self.response_done.set()
            elif event.type in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
                self.answer_audio_done.set()
        elif isinstance(event, Problem):
            self._say(f"sandra: {event.message}")


def summary(engine: CallEngine) -> dict[str, Any]:
    messages = engine.history.messages()
    return {
        "user": [m["content"] for m in messages if m["role"] == "user"],
        "assistant": [m["content"] for m in messages if m["role"] == "assistant"],
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
    secrets = await asyncio.get_running_loop().run_in_executor(None, read_secrets, settings.provider)
    audio: AudioIO = FileAudio(args.wav, args.out) if args.wav else DeviceAudio(settings.input_device, settings.output_device)
    events_file = open(args.events, "w", encoding="utf-8") if args.events else None
    engine = CallEngine(settings, audio=audio, secrets=secrets)
    progress = Progress()
    engine.subscribe(EventLog(events_file))
    engine.subscribe(progress)
    try:
        await engine.start()
        await wait_connected(engine, progress)
        if args.wav:
            assert isinstance(audio, FileAudio)
            await one_turn(engine, audio, progress)
        if args.duration:
            await asyncio.sleep(args.duration)
        elif not args.wav:
            await _interactive(engine)
        if engine.state.phase is Phase.ENDED:
            raise SandraError(engine.state.reason or "The call ended.")
    except asyncio.TimeoutError:
        raise SandraError("No answer came in time; the provider may be overloaded or unreachable.") from None
    finally:
        await engine.close()
        print(json.dumps(summary(engine)), flush=True)
        if events_file is not None:
            events_file.close()
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.out and not args.wav:
        build_parser().error("--out needs --wav")
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
