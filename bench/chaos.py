"""Chaos: `python -m bench.chaos [--cycles 50] [--seed S]` — in one call, SIGKILL the local
server at random (seeded) moments and restart it on the same port, N times.

Some kills land while the call is up (at a random point after it connected), some while
the engine is redialling (mid-handshake: just after it starts a connection attempt to
the restarted server). Each cycle must end CONNECTED again; the conversation must be
kept, in the engine's history and on the server's side; threads, open files and asyncio
tasks must not grow across the run.

The server runs in assistant mode. A restarted server knows only what the engine gives
the new session, so after each reconnect the engine types a question of its own
("what is N plus 2", N the cycle) and then "what did I say before": the local assistant
answers that from the conversation it holds (server/realtime/responder.py, "You said:
..."), so the answer must name that cycle's question.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any


from bench.figures import Figures, figure, print_table  # noqa: E402
from core.call.state import Phase  # noqa: E402
from core.call.engine import CallEngine  # noqa: E402
from core.call.events import EngineEvent, ServerEvent, TranscriptDelta  # noqa: E402
from rig.engine_helpers import Recorder, custom_settings, engine_options, tone_audio  # noqa: E402
from rig.server_process import TEST_SERVER_KEY, ServerProcess, private_env, start_server  # noqa: E402

RECOVER_S = 40.0  # the whole backoff schedule (1+2+4+8+16 s) plus a restart
ANSWER_S = 15.0  # a typed question answered by the local assistant, on a loaded machine
RECALL = "what did I say before"
MID_HANDSHAKE_SHARE = 0.3
CONVERSATION = [("user", "remember the word pineapple"), ("assistant", "I will remember pineapple.")]


def resources() -> dict[str, int]:
    # asyncio's default executor adds workers lazily, up to a fixed bound, as load peaks:
    # that is not a leak, so they are left out; every other thread counts.
    threads = [t for t in threading.enumerate() if not t.name.startswith("asyncio_")]
    return {"threads": len(threads), "fds": len(os.listdir("/proc/self/fd")), "tasks": len(asyncio.all_tasks())}


def _done_after(recorder: Recorder, seen: int) -> Callable[[EngineEvent], bool]:
    """Whether the server's response.done is among the events after the first `seen`."""
    def done(_event: EngineEvent) -> bool:
        # By position, not by the event: equal events of earlier turns must not count.
        return any(isinstance(e, ServerEvent) and e.type == "response.done" for e in recorder.events[seen:])
    return done


async def ask(engine: CallEngine, recorder: Recorder, text: str) -> str:
    """Type `text` as a user turn; the assistant's final answer to it, once the response is done.

    Waiting for response.done matters: a question typed while an answer is still being
    sent is refused by the server (one response at a time)."""
    seen = len(recorder.events)
    engine.send_text(text)
    await recorder.wait_for(_done_after(recorder, seen), ANSWER_S)
    answers = [e.text for e in recorder.events[seen:]
               if isinstance(e, TranscriptDelta) and e.role == "assistant" and e.final]
    return answers[-1] if answers else ""


async def server_recalls(engine: CallEngine, recorder: Recorder, cycle: int) -> bool:
    """The server answers "what did I say before" with the question asked just before it."""
    question = f"what is {cycle} plus 2"
    await ask(engine, recorder, question)
    recalled = await ask(engine, recorder, RECALL)
    if question not in recalled.lower():
        print(f"cycle {cycle}: asked {question!r}, the server recalled {recalled!r}", file=sys.stderr)
        return False
    return True


def _kill(server: ServerProcess) -> None:
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)
    server.stop()  # closes its pipe; the process is already gone


async def chaos(cycles: int, seed: int, tmp: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    server = start_server(tmp, "--mode", "assistant")
    port = str(server.port)
    engine = CallEngine(custom_settings(server.base_url), audio=tone_audio(tmp), api_key=TEST_SERVER_KEY,
                        options=engine_options())
    recorder = Recorder(engine)
    for role, text in CONVERSATION:
        engine.history.add(role, text)
    recover_s: list[float] = []
    recalled: list[bool] = []
    mid_handshake = 0
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 15)
        before: dict[str, int] = {}
        for cycle in range(cycles):
            if cycle == 1:
                # Counted after one full cycle: lazily made executor threads and the like
                # are there by then, so what grows after is a leak.
                await asyncio.sleep(0.5)
                before = resources()
            connected = recorder.phases().count(Phase.CONNECTED)
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            _kill(server)
            killed_at = time.monotonic()
            server = start_server(tmp, "--mode", "assistant", "--port", port)
            if rng.random() < MID_HANDSHAKE_SHARE:
                # Kill again as the engine starts dialling the new server.
                attempts = recorder.phases().count(Phase.CONNECTING)
                await recorder.wait_for(lambda _e: recorder.phases().count(Phase.CONNECTING) > attempts, RECOVER_S)
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                mid_handshake += engine.state.phase is Phase.CONNECTING
                _kill(server)
                server = start_server(tmp, "--mode", "assistant", "--port", port)
            await recorder.wait_for(lambda _e: recorder.phases().count(Phase.CONNECTED) > connected, RECOVER_S)
            recover_s.append(time.monotonic() - killed_at)
            recalled.append(await server_recalls(engine, recorder, cycle))
        await asyncio.sleep(0.5)
        after = resources()
    finally:
        await engine.close()
        server.stop()
    kept = [(m["role"], m["content"]) for m in engine.history.messages()][:len(CONVERSATION)] == CONVERSATION
    return {"cycles": cycles, "recovered": len(recover_s), "killed_mid_handshake": mid_handshake,
            "reconnects": engine.reconnects, "conversation_kept": kept, "server_recalled": sum(recalled),
            "before": before, "after": after,
            "recover_s": recover_s, "ended": engine.state.reason}


def run(quick: bool = False) -> Figures:
    """Recovery time per kill (s) over 10 cycles (quick) or 50; plus the resource growth."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(private_env(Path(tmp) / "home", None))  # transcripts and logs stay in tmp
        result = asyncio.run(chaos(10 if quick else 50, seed=1, tmp=Path(tmp)))
    figures = {"chaos_recover_s": figure(result["recover_s"]),
               "chaos_cycles_recovered": figure([result["recovered"]]),
               "chaos_server_recalled": figure([result["server_recalled"]])}
    for name in ("threads", "fds", "tasks"):
        figures[f"chaos_{name}_growth"] = figure([result["after"][name] - result["before"][name]])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(private_env(Path(tmp) / "home", None))
        result = asyncio.run(chaos(args.cycles, args.seed, Path(tmp)))
    print_table({"recover_s": figure(result["recover_s"])}, sys.stdout)
    print(json.dumps({k: v for k, v in result.items() if k != "recover_s"}))
    kept = result["conversation_kept"] and result["server_recalled"] == args.cycles
    return 0 if result["recovered"] == args.cycles and kept else 1


if __name__ == "__main__":
    sys.exit(main())
