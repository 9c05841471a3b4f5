"""Hostile data-channel floods: `python -m bench.fuzz [--messages N] [--seed S]`.

Two runs, each over real WebRTC on loopback:
- engine: a hostile provider (rig/hostile_server.py) sends N garbage messages to a
  connected CallEngine, then one valid transcript event that must still be handled;
- server: a test client sends N garbage messages to the real local server (echo mode),
  then takes a normal push-to-talk turn that must still be answered.
Each returns its figures (messages, bytes, seconds, log lines…) so the tests can assert
on a short run and RELIABILITY.md can quote a long one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


from core.call.state import Phase  # noqa: E402
from core.call.engine import CallEngine  # noqa: E402
from core.call.events import TranscriptDelta  # noqa: E402
from rig.engine_helpers import custom_settings, engine_options, tone_audio  # noqa: E402
from rig.hostile_server import HostileServer, drain, hostile_messages  # noqa: E402
from rig.pulse_rig import tone  # noqa: E402
from rig.realtime_client import RealtimeClient, ephemeral_key  # noqa: E402
from rig.server_process import private_env, start_server  # noqa: E402

# Flow control: let the receiver catch up every this many messages.
BATCH = 200
# A receiver that has not taken a megabyte in this long has stopped reading.
STALL_S = 10


class LogCounter(logging.Handler):
    """Counts log records by logger; keeps any that carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_logger: dict[str, int] = {}
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.by_logger[record.name] = self.by_logger.get(record.name, 0) + 1
        if record.exc_info:
            self.tracebacks.append(self.format(record))

    def count(self, prefix: str) -> int:
        return sum(n for name, n in self.by_logger.items() if name.startswith(prefix))


async def _until(condition, timeout: float) -> None:
    """Poll `condition` until true or `timeout` seconds passed; the caller checks the outcome."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _flood(channel: Any, count: int, seed: int, alive) -> tuple[int, int, bool]:
    """Send `count` hostile messages; stop early when `alive()` turns false or the other
    side stops reading. Returns (sent, bytes, stalled)."""
    messages = hostile_messages(random.Random(seed))
    sent = size = 0
    try:
        while sent < count and alive():
            for _ in range(min(BATCH, count - sent)):
                message = next(messages)
                channel.send(message)
                sent += 1
                size += len(message)
            await drain(channel, timeout=STALL_S)
        await drain(channel, 0, timeout=STALL_S)
    except AssertionError:
        return sent, size, True
    return sent, size, False


async def fuzz_engine(count: int, seed: int, tmp: Path) -> dict[str, Any]:
    """Flood a connected engine; figures include whether it stayed connected and still listens."""
    counter = LogCounter()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(counter)
    root.setLevel(logging.INFO)  # what the app's log file keeps
    loop_errors: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx.get("message", "")))
    finals: list[str] = []
    try:
        async with HostileServer() as hostile:
            engine = CallEngine(custom_settings(hostile.base_url), audio=tone_audio(tmp), api_key=hostile.api_key,
                                options=engine_options())
            engine.subscribe(lambda e: finals.append(e.text) if isinstance(e, TranscriptDelta) and e.final else None)
            try:
                await engine.start()
                peer = await hostile.next_peer(15)
                await _until(lambda: engine.state.phase is Phase.CONNECTED, 15)
                rss_before = _rss_kb()
                started = time.monotonic()
                sent, size, stalled = await _flood(peer.channel, count, seed,
                                          lambda: engine.state.phase is Phase.CONNECTED and len(hostile.peers) == 1)
                elapsed = time.monotonic() - started
                still_here = f"still here after {sent} messages"
                peer.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_last",
                           "content_index": 0, "transcript": still_here})
                await _until(lambda: still_here in finals, 10)
                figures = {
                    "messages": sent, "bytes": size, "seconds": round(elapsed, 1),
                    "per_second": round(sent / elapsed) if elapsed else 0, "stalled": stalled,
                    "bad_events_counted": engine.bad_events.count,
                    "connections": len(hostile.peers), "reconnects": engine.reconnects,
                    "state_after": engine.state.phase.value,
                    "final_event_handled": still_here in finals,
                    "in_history": any(m["content"] == still_here for m in engine.history.messages()),
                    "rss_growth_kb": _rss_kb() - rss_before,
                }
            finally:
                await engine.close()
    finally:
        root.removeHandler(counter)
        root.setLevel(old_level)
        asyncio.get_running_loop().set_exception_handler(None)
    figures.update(engine_log_lines=counter.count("core.call.engine"), all_log_lines=sum(counter.by_logger.values()),
                   log_lines_by_logger=counter.by_logger, tracebacks=counter.tracebacks[:3],
                   loop_errors=loop_errors[:3])
    return figures


async def fuzz_server(count: int, seed: int, tmp: Path) -> dict[str, Any]:
    """Flood the real local server (echo mode) from a test client, then take a normal turn."""
    server = start_server(tmp, "--mode", "echo")
    client: RealtimeClient | None = None
    try:
        key = await ephemeral_key(server.base_url, server.server_key)
        client = await RealtimeClient.connect(server.base_url, key)
        channel = client.channel
        started = time.monotonic()
        sent, size, stalled = await _flood(channel, count, seed,
                                  lambda: channel.readyState == "open" and server.proc.poll() is None)
        elapsed = time.monotonic() - started
        # A normal turn afterwards: the session still updates and the voice still comes back.
        mark = client.mark()
        try:
            client.send({"type": "session.update", "session": {"instructions": "after the flood"}})
            await client.wait_for("session.updated", since=mark, timeout=10)
            spoken_at = time.monotonic()
            await client.push_to_talk(tone(440, 0.5))
            await asyncio.sleep(0.3)
            answered, echoed = True, client.audio.first_loud_after(spoken_at) is not None
        except (AssertionError, asyncio.TimeoutError):
            answered = echoed = False
        errors = len(client.of_type("error"))
        figures = {
            "messages": sent, "bytes": size, "seconds": round(elapsed, 1),
            "per_second": round(sent / elapsed) if elapsed else 0, "stalled": stalled,
            "error_events_back": errors, "channel_after": channel.readyState,
            "server_alive": server.proc.poll() is None, "session_updated": answered, "audio_echoed": echoed,
        }
    finally:
        if client is not None:
            await client.close()
        server.stop()
    stderr = server.stderr()
    log_file = next(server.home.rglob("server.log"), None)
    figures.update(
        server_stderr_lines=len(stderr.splitlines()),
        server_log_file_lines=len(log_file.read_text(errors="replace").splitlines()) if log_file else None,
        traceback_in_stderr="Traceback" in stderr,
        stderr_tail=stderr[-1500:] if "Traceback" in stderr else "",
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("engine", "server"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        # The engine writes transcripts and logs under the user's dirs: keep them in tmp.
        os.environ.update(private_env(Path(tmp) / "home", None))
        for name, run in (("engine", fuzz_engine), ("server", fuzz_server)):
            if args.only in (None, name):
                (Path(tmp) / name).mkdir()
                figures = asyncio.run(run(args.messages, args.seed, Path(tmp) / name))
                print(f"{name}: " + json.dumps(figures, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
