"""Tool calls inside a real call: a scripted model on a real aiortc peer calls tools (issue #17).

The far end is rig/hostile_server.py's peer, scripted here to speak OpenAI's tool protocol
(a `function_call` item, `response.done`); the near end is the real CallEngine with the
window's CallSession around it, so MCP servers start with the call exactly as in the app.
The MCP server is rig/mcp_test_server.py over stdio (the `mcp` package on both ends).
Every event either way is checked against the openai SDK's types.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.call.engine import CallEngine
from core.call.events import ToolActivity
from core.call.state import Phase
from core.config import McpServerSettings, Secrets, Settings
from core.tools.builtin import Timers, builtin_tools
from core.tools.registry import Tool, ToolRegistry
from gui.app import application
from gui.call_session import CallSession, CallTools
from gui.engine_bridge import EngineBridge
from gui.engine_thread import ThreadedEngine
from rig.engine_helpers import Recorder, custom_settings, engine_options, tone_audio
from rig.hostile_server import HostilePeer, HostileServer
from test_gui_e2e import run_on_qasync
from test_wire_shapes import all_problems

pytestmark = pytest.mark.timeout(90)

MCP_SERVER = str(Path(__file__).resolve().parent.parent / "rig" / "mcp_test_server.py")
HOSTILE_KEY = "sk-test-hostile-0123456789"


class ScriptedModel:
    """The model's side of the call, played by the test over the peer's data channel."""

    def __init__(self, peer: HostilePeer) -> None:
        self.peer = peer
        self.said: list[str] = []  # every event the model sent, as JSON, for the shape check
        self._ids = itertools.count(1)

    def received(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.peer.received if isinstance(m, str)]

    def _send(self, event: dict[str, Any]) -> None:
        event = {"event_id": f"event_{next(self._ids)}", **event}
        self.said.append(json.dumps(event))
        self.peer.send(event)

    async def wait_received(self, predicate: Callable[[dict[str, Any]], bool], timeout: float,
                            what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [event for event in self.received() if predicate(event)]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"the engine never sent {what}; it sent {self.received()[-8:]}"
            await asyncio.sleep(0.05)

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """A response that calls one tool, then ends: the engine must answer it."""
        n = next(self._ids)
        call_id, response_id = f"call_{n}", f"resp_{n}"
        item = {"id": f"item_{n}", "object": "realtime.item", "type": "function_call", "status": "completed",
                "call_id": call_id, "name": name, "arguments": json.dumps(arguments)}
        self._send({"type": "response.output_item.done", "response_id": response_id, "output_index": 0,
                    "item": item})
        self._send({"type": "response.done", "response": {"id": response_id, "object": "realtime.response",
                                                           "status": "completed", "output": [item]}})
        return call_id

    async def output_of(self, call_id: str, timeout: float = 20.0) -> Any:
        """The function_call_output the engine sent for a call (parsed), once a response.create followed it."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.received()
            at = [i for i, e in enumerate(events)
                  if e["type"] == "conversation.item.create" and e["item"].get("call_id") == call_id]
            if at and any(e["type"] == "response.create" for e in events[at[0] + 1:]):
                return json.loads(events[at[0]]["item"]["output"])
            assert time.monotonic() < deadline, f"no output and response.create for {call_id}: {events[-6:]}"
            await asyncio.sleep(0.05)

    def answer(self, text: str) -> None:
        """A spoken answer's transcript, and the end of that response."""
        n = next(self._ids)
        self._send({"type": "response.output_audio_transcript.done", "response_id": f"resp_{n}",
                    "item_id": f"item_{n}", "output_index": 0, "content_index": 0, "transcript": text})
        self._send({"type": "response.done", "response": {"id": f"resp_{n}", "object": "realtime.response",
                                                           "status": "completed", "output": []}})

    def audio_done(self) -> None:
        """The answer's audio has finished playing (what `talk` waits for before its next turn)."""
        self._send({"type": "output_audio_buffer.stopped", "response_id": f"resp_{next(self._ids)}"})

    def tool_names(self) -> list[list[str]]:
        """The tool list of every session.update that named tools, in order."""
        return [[tool["name"] for tool in e["session"]["tools"]] for e in self.received()
                if e["type"] == "session.update" and "tools" in e["session"]]

    def shape_problems(self) -> str:
        sent = [m for m in self.peer.received if isinstance(m, str)]
        return all_problems(self.said, server=True) + all_problems(sent, server=False)


def _builtin_registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.add(builtin_tools(Timers(on_ring=lambda label: None)))
    return registry


async def _refuse(tool: Tool, arguments: Any) -> bool:
    return False


async def until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


async def _connected(server: HostileServer, recorder: Recorder) -> ScriptedModel:
    await recorder.wait_phase(Phase.CONNECTED, 20)
    return ScriptedModel(await server.next_peer(10))


# ---- tools that fail: the call goes on ---------------------------------------------------


def _explode() -> str:
    raise RuntimeError("the disk is on fire")


async def _stall() -> str:
    await asyncio.sleep(60)
    return "too late"


async def test_a_tool_that_raises_and_one_that_hangs_give_error_outputs_and_the_call_goes_on(
        tmp_path: Path, private_home: Path) -> None:
    registry = _builtin_registry()
    registry.add([Tool("explode", "Raises.", {"type": "object", "properties": {}}, _explode),
                  Tool("stall", "Hangs.", {"type": "object", "properties": {}}, _stall, timeout_s=0.5)])
    async with HostileServer(api_key=HOSTILE_KEY) as server:
        engine = CallEngine(custom_settings(server.base_url), audio=tone_audio(tmp_path), api_key=HOSTILE_KEY,
                            options=engine_options(), tools=registry, approve=_refuse)
        recorder = Recorder(engine)
        try:
            await engine.start()
            model = await _connected(server, recorder)
            await model.wait_received(lambda e: e["type"] == "session.update", 10, "the session's first update")
            assert {"explode", "stall", "get_time"} <= set(model.tool_names()[0])

            started = time.monotonic()
            raised, hung = model.call("explode", {}), model.call("stall", {})
            assert "the disk is on fire" in (await model.output_of(raised))["error"]
            output = await model.output_of(hung)
            assert "did not finish within 0.5 seconds" in output["error"]
            assert time.monotonic() - started < 5

            # The call goes on: the next tool call works and the model's answer is heard.
            assert "local_time" in await model.output_of(model.call("get_time", {}))
            model.answer("It is time for tea.")
            await recorder.wait_for(lambda e: getattr(e, "text", None) == "It is time for tea.", 10)
            assert engine.state.phase is Phase.CONNECTED
            finished = {e.name: e for e in recorder.events if isinstance(e, ToolActivity) and e.output is not None}
            assert finished["explode"].failed and finished["stall"].failed and not finished["get_time"].failed
            assert not model.shape_problems(), model.shape_problems()
        finally:
            await engine.close()


# ---- MCP servers with the call ---------------------------------------------------------------


class Session:
    """The window's CallSession on a real engine (a WAV microphone), Qt signals collected."""

    def __init__(self, tmp_path: Path, settings: Settings, registry: ToolRegistry) -> None:
        application()  # the session is a QObject; its signals need the application's thread
        self.problems: list[str] = []
        self.engines: list[CallEngine] = []
        self.recorders: list[Recorder] = []  # subscribed as the engine is made: a fast connect is not missed
        bridge = EngineBridge()
        bridge.problem.connect(lambda message, _fatal: self.problems.append(message))

        async def factory(settings: Settings, secrets: Secrets, seed: Any, tools: CallTools) -> ThreadedEngine:
            # on a loop of its own, as the app's (gui.call_session.default_engine_factory): MCP servers and
            # tools stay on the window's loop
            engine = await ThreadedEngine.create(lambda: CallEngine(
                settings, audio=tone_audio(tmp_path), secrets=secrets, options=engine_options(),
                tools=tools.registry, approve=tools.approve, history=seed))
            self.engines.append(engine.call_engine)
            self.recorders.append(Recorder(engine))  # hears on the window's loop, as the window does
            return engine

        self.session = CallSession(settings, bridge, factory=factory, read=lambda _p: Secrets(api_key=HOSTILE_KEY),
                                   write=lambda change: None, tools=CallTools(registry, _refuse))


def _mcp_settings(base_url: str) -> Settings:
    server = McpServerSettings("test", command=sys.executable, args=(MCP_SERVER,), disabled_tools=("nap",))
    return custom_settings(base_url, mcp_servers=(server,))


async def _mcp_reached_then_killed(
        tmp_path: Path) -> None:
    registry = _builtin_registry()
    async with HostileServer(api_key=HOSTILE_KEY) as server:
        harness = Session(tmp_path, _mcp_settings(server.base_url), registry)
        session = harness.session
        try:
            session.connect_call()  # the engine, then the MCP servers
            await until(lambda: harness.engines, 10, "the session made its engine")
            recorder = harness.recorders[0]
            model = await _connected(server, recorder)
            await model.wait_received(lambda e: e["type"] == "session.update" and "test__add" in json.dumps(e), 20,
                                      "a session.update offering the MCP server's tools")

            output = await model.output_of(model.call("test__add", {"a": 2, "b": 40}))
            assert output == {"result": 42}
            pid = (await model.output_of(model.call("test__pid", {})))["result"]
            model.answer("Two and forty make 42.")
            await recorder.wait_for(lambda e: getattr(e, "text", None) == "Two and forty make 42.", 10)

            assert "test__add" in model.tool_names()[-1]
            updates = len(model.tool_names())
            os.kill(pid, signal.SIGKILL)
            await until(lambda: len(model.tool_names()) > updates, 20,
                        "a session.update withdrawing the dead server's tools")
            assert model.tool_names()[-1] == ["get_time", "calculate", "set_timer", "open_url"]
            await until(lambda: harness.problems, 10, "the dead MCP server is reported")
            assert "“test” stopped; its tools are withdrawn" in harness.problems[0]

            # Nothing else broke: the call is up, built-in tools answer, a withdrawn one is an error.
            assert "result" in await model.output_of(model.call("calculate", {"expression": "6 * 7"}))
            assert "error" in await model.output_of(model.call("test__add", {"a": 1, "b": 1}))
            assert harness.engines[0].state.phase is Phase.CONNECTED and len(harness.engines) == 1
            assert not model.shape_problems(), model.shape_problems()
        finally:
            await session.close()
    assert not [name for name in registry.names() if name.startswith("test__")]


def test_an_mcp_tool_called_by_the_model_reaches_the_server_and_killing_it_withdraws_its_tools(
        tmp_path: Path, private_home: Path) -> None:
    run_on_qasync(_mcp_reached_then_killed(tmp_path))  # Qt and asyncio on one thread, as in the app



async def _mcp_cannot_start(
        tmp_path: Path) -> None:
    registry = _builtin_registry()
    broken = McpServerSettings("broken", command=str(tmp_path / "no-such-server"))
    async with HostileServer(api_key=HOSTILE_KEY) as server:
        harness = Session(tmp_path, custom_settings(server.base_url, mcp_servers=(broken,)), registry)
        try:
            harness.session.connect_call()
            await until(lambda: harness.engines, 10, "the session made its engine")
            model = await _connected(server, harness.recorders[0])
            await until(lambda: harness.problems, 20, "the server that cannot start is reported")
            assert "“broken” could not start: command not found" in harness.problems[0]
            assert "result" in await model.output_of(model.call("calculate", {"expression": "1 + 1"}))
        finally:
            await harness.session.close()


def test_an_mcp_server_that_cannot_start_is_reported_and_the_call_goes_on(
        tmp_path: Path, private_home: Path) -> None:
    run_on_qasync(_mcp_cannot_start(tmp_path))  # Qt and asyncio on one thread, as in the app



async def _mcp_follows_the_call(
        tmp_path: Path) -> None:
    registry = _builtin_registry()
    async with HostileServer(api_key=HOSTILE_KEY) as server:
        harness = Session(tmp_path, _mcp_settings(server.base_url), registry)
        session = harness.session
        try:
            session.connect_call()
            await until(lambda: "test__add" in registry.names(), 20, "the MCP server's tools are offered")
            session.hang_up()
            await until(lambda: not any(n.startswith("test__") for n in registry.names()), 20,
                        "hanging up stops the MCP server")
            assert harness.problems == []  # a server stopped on purpose is no problem
            session.connect_call()
            await until(lambda: "test__add" in registry.names(), 20, "the next call starts it again")
        finally:
            await session.close()
    assert not any(name.startswith("test__") for name in registry.names())


def test_hanging_up_stops_the_mcp_servers_and_a_new_call_starts_them_again(
        tmp_path: Path, private_home: Path) -> None:
    run_on_qasync(_mcp_follows_the_call(tmp_path))  # Qt and asyncio on one thread, as in the app



# ---- MCP servers in the settings file ----------------------------------------------------------


@pytest.mark.parametrize("saved, loaded", [
    ([{"name": "files", "command": "mcp-files", "args": ["-v"], "env": {"A": "1"}}],
     (McpServerSettings("files", command="mcp-files", args=("-v",), env=(("A", "1"),)),)),
    ([{"name": "web", "transport": "http", "url": "https://h/mcp", "disabled_tools": ["x"], "enabled": False}],
     (McpServerSettings("web", transport="http", url="https://h/mcp", disabled_tools=("x",), enabled=False),)),
    ([{"name": "", "command": "x"}], None),  # no name
    ([{"name": "a", "transport": "carrier-pigeon"}], None),
    ([{"name": "a", "args": "not a list"}], None),
    ([{"name": "a", "env": {"A": 1}}], None),
    ([{"name": "a", "surprise": True}], None),
    ([{"name": "a"}, {"name": "a"}], None),  # two servers of one name: their tools would clash
    ({"name": "a"}, None),
])
def test_saved_mcp_servers_load_or_are_reset_with_a_warning(tmp_path: Path, saved: Any, loaded: Any) -> None:
    from core.config import load_settings

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"mcp_servers": saved, "tool_approvals": [["open_url", "always"]]}))
    settings = load_settings(path)
    assert settings.mcp_servers == (loaded or ())
    assert bool(settings.load_warnings) == (loaded is None)
    assert settings.approval("open_url") == "always" and settings.approval("get_time") == "ask"


def test_an_unknown_approval_policy_is_reset(tmp_path: Path) -> None:
    from core.config import load_settings

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"tool_approvals": [["open_url", "sometimes"]]}))
    settings = load_settings(path)
    assert settings.tool_approvals == () and settings.load_warnings
