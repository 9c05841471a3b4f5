"""Function tools: the registry's error handling, timeouts and approval, the built-ins, the wire events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime
from typing import Any

import pytest
from openai.types.realtime import (
    ConversationItemCreateEvent,
    RealtimeConversationItemFunctionCall,
    RealtimeConversationItemFunctionCallOutput,
    RealtimeFunctionTool,
    RealtimeResponse,
    ResponseCreateEvent,
    ResponseDoneEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseOutputItemDoneEvent,
    SessionUpdateEvent,
)

from core.tools import builtin
from core.tools.builtin import Timers, builtin_tools, calculate
from core.call.protocol import BadEvent, CreateResponse, FunctionCall, FunctionCallOutput, parse_server_event, tools_update
from core.tools.protocol import ToolCallFlow, ToolStep
from core.tools.registry import DEFAULT_TIMEOUT_S, ApprovalPolicy, Tool, ToolFailure, ToolRegistry

OBJECT = {"type": "object", "properties": {}}


class Approvals:
    """The approve callback: answers as told, and counts the prompts."""

    def __init__(self, answer: bool | Exception = True) -> None:
        self.answer = answer
        self.asked: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, tool: Tool, arguments: Any) -> bool:
        self.asked.append((tool.name, dict(arguments)))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


async def _greet(name: str) -> str:
    return f"hello {name}"


def _refuse() -> None:
    raise ToolFailure("the printer is on fire")


def _crash() -> None:
    raise ValueError("bad value")


def _registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.add(
        [
            Tool("add", "Add.", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}, _add),
            Tool("greet", "Greet.", OBJECT, _greet),
            Tool("refuse", "Refuses.", OBJECT, _refuse),
            Tool("crash", "Crashes.", OBJECT, _crash),
        ]
    )
    return registry


def _error(output: str) -> str:
    decoded = json.loads(output)
    assert set(decoded) == {"error"}, output
    return decoded["error"]


# -- the registry ----------------------------------------------------------------

RUN_TABLE = [
    # name, arguments, expected output, or ("error", words the message must contain)
    ("add", '{"a": 2, "b": 3}', '{"sum": 5}'),
    ("greet", '{"name": "Ana"}', "hello Ana"),
    ("nope", "{}", ("error", "no tool named 'nope'")),
    ("add", '{"a": 2,', ("error", "not valid JSON")),
    ("add", "[1, 2]", ("error", "must be a JSON object")),
    ("add", '{"a": 2}', ("error", "cannot take these arguments")),
    ("add", '{"a": 1, "b": 2, "c": 3}', ("error", "cannot take these arguments")),
    ("greet", "", ("error", "cannot take these arguments")),
    ("refuse", "", ("error", "the printer is on fire")),
    ("crash", "{}", ("error", "crash failed: ValueError: bad value")),
]


@pytest.mark.parametrize(("name", "arguments", "expected"), RUN_TABLE)
async def test_run_table(name: str, arguments: str, expected: Any) -> None:
    output = await _registry().run(name, arguments, Approvals())
    if isinstance(expected, tuple):
        assert expected[1] in _error(output)
    else:
        assert output == expected


def test_session_tools_are_openai_function_tools() -> None:
    registry = ToolRegistry()
    registry.add(builtin_tools(Timers(on_ring=lambda label: None)))
    entries = registry.session_tools()
    assert [entry["name"] for entry in entries] == ["get_time", "calculate", "set_timer", "open_url"]
    for entry in entries:
        model = RealtimeFunctionTool.model_validate(entry)
        assert model.model_dump(exclude_none=True) == entry
    update = SessionUpdateEvent.model_validate(tools_update(entries).to_json())
    assert [tool.name for tool in update.session.tools] == [entry["name"] for entry in entries]
    assert update.session.tool_choice == "auto"


def test_bad_names_are_refused_and_changes_are_announced() -> None:
    with pytest.raises(ValueError):
        Tool("has space", "x", OBJECT, _add)
    with pytest.raises(ValueError):
        Tool("x" * 65, "x", OBJECT, _add)
    changes: list[list[str]] = []
    registry = ToolRegistry()
    registry.on_change = lambda: changes.append(registry.names())
    registry.add([Tool("add", "Add.", OBJECT, _add)])
    registry.remove(["missing"])  # nothing removed: no announcement
    registry.remove(["add"])
    assert changes == [["add"], []]


async def test_sync_tools_run_off_the_loop_thread() -> None:
    threads: list[str] = []
    registry = ToolRegistry()
    registry.add([Tool("where", "Thread name.", OBJECT, lambda: threads.append(threading.current_thread().name) or "ok")])
    assert await registry.run("where", "{}", Approvals()) == "ok"
    assert threads[0] != threading.current_thread().name and threads[0].startswith("tool")
    registry.close()


async def _ticks_during(coro: Any) -> tuple[Any, int, float]:
    """Run coro while counting 10 ms ticks of the loop: a blocked loop would count none."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    result = await coro
    elapsed = time.monotonic() - started
    stop.set()
    await task
    return result, ticks, elapsed


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_hanging_tool_times_out_and_the_loop_goes_on(kind: str) -> None:
    release = threading.Event()

    def hang_sync() -> str:
        release.wait(30)
        return "too late"

    async def hang_async() -> str:
        await asyncio.sleep(30)
        return "too late"

    registry = ToolRegistry()
    handler = hang_sync if kind == "sync" else hang_async
    registry.add([Tool("hang", "Hangs.", OBJECT, handler, timeout_s=0.3)])
    output, ticks, elapsed = await _ticks_during(registry.run("hang", "{}", Approvals()))
    release.set()
    assert "did not finish within 0.3 seconds" in _error(output)
    assert 0.3 <= elapsed < 1.5
    assert ticks >= 10  # the loop kept running while the tool hung
    # The registry still works after a timeout.
    registry.add([Tool("add", "Add.", OBJECT, _add)])
    assert await registry.run("add", '{"a": 1, "b": 1}', Approvals()) == '{"sum": 2}'
    registry.close()


async def test_the_shipped_default_timeout_stops_a_hanging_tool() -> None:
    async def hang() -> str:
        await asyncio.sleep(DEFAULT_TIMEOUT_S * 3)
        return "too late"

    tool = Tool("hang", "Hangs.", OBJECT, hang)
    assert tool.timeout_s == DEFAULT_TIMEOUT_S == 10.0
    registry = ToolRegistry()
    registry.add([tool])
    output, ticks, elapsed = await _ticks_during(registry.run("hang", "{}", Approvals()))
    assert f"did not finish within {DEFAULT_TIMEOUT_S:g} seconds" in _error(output)
    assert DEFAULT_TIMEOUT_S <= elapsed < DEFAULT_TIMEOUT_S + 2
    assert ticks > 100


# -- approval ------------------------------------------------------------------------

APPROVAL_TABLE = [
    # policy, answers given in turn, expected runs, expected prompts (over three calls, end_session after the 2nd)
    (ApprovalPolicy.ASK, True, 3, 3),
    (ApprovalPolicy.ASK, False, 0, 3),
    (ApprovalPolicy.SESSION, True, 3, 2),  # asked once, then again after end_session
    (ApprovalPolicy.SESSION, False, 0, 3),  # a no is not remembered
    (ApprovalPolicy.ALWAYS, False, 3, 0),
    (ApprovalPolicy.ASK, RuntimeError("prompt broke"), 0, 3),
]


@pytest.mark.parametrize(("policy", "answer", "runs", "prompts"), APPROVAL_TABLE)
async def test_approval_policies(policy: ApprovalPolicy, answer: Any, runs: int, prompts: int) -> None:
    done: list[str] = []
    registry = ToolRegistry()
    registry.add([Tool("touch", "Changes things.", OBJECT, lambda: done.append("x") or "done", side_effect=True)])
    registry.set_policy("touch", policy)
    approvals = Approvals(answer)
    outputs = []
    for index in range(3):
        outputs.append(await registry.run("touch", "{}", approvals))
        if index == 1:
            registry.end_session()
    assert len(done) == runs
    assert len(approvals.asked) == prompts
    refused = [output for output in outputs if output != "done"]
    assert len(refused) == 3 - runs
    for output in refused:
        assert "did not allow touch" in _error(output)
    registry.close()


async def test_tools_without_side_effects_never_ask() -> None:
    approvals = Approvals(False)
    assert await _registry().run("add", '{"a": 1, "b": 2}', approvals) == '{"sum": 3}'
    assert approvals.asked == []


async def test_open_url_refused_opens_nothing_and_granted_opens_the_page() -> None:
    opened: list[str] = []
    registry = ToolRegistry()
    registry.add(builtin_tools(Timers(on_ring=lambda label: None), opener=lambda url: opened.append(url) or True))
    refuse = Approvals(False)
    output = await registry.run("open_url", '{"url": "https://example.org/a?b=c"}', refuse)
    assert "did not allow open_url" in _error(output)
    assert refuse.asked == [("open_url", {"url": "https://example.org/a?b=c"})]
    assert opened == []
    output = await registry.run("open_url", '{"url": "https://example.org/a?b=c"}', Approvals(True))
    assert json.loads(output) == {"opened": "https://example.org/a?b=c"}
    assert opened == ["https://example.org/a?b=c"]
    for bad in ("file:///etc/passwd", "javascript:alert(1)", "https://", "ftp://example.org/"):
        output = await registry.run("open_url", json.dumps({"url": bad}), Approvals(True))
        assert "Only http and https" in _error(output)
    assert opened == ["https://example.org/a?b=c"]
    registry.close()


async def test_open_url_reports_a_browser_that_would_not_start() -> None:
    registry = ToolRegistry()
    registry.add(builtin_tools(Timers(on_ring=lambda label: None), opener=lambda url: False))
    output = await registry.run("open_url", '{"url": "http://example.org"}', Approvals(True))
    assert "No web browser" in _error(output)
    registry.close()


# -- the built-ins ------------------------------------------------------------------------

CALCULATOR_TABLE = [
    ("1 + 2", 3),
    ("(17 + 4) * 3 / 7", 9),
    ("0.1 + 0.2", 0.3),
    ("2 ** 10", 1024),
    ("2^10", 1024),
    ("−3 × 4 ÷ 2", -6),
    ("7 % 3", 1),
    ("-(2.5)", -2.5),
    ("2 ** -2", 0.25),
    ("1 / 3", 0.333333333333),
    ("1/0", "Division by zero"),
    ("9 ** 9 ** 9", "Exponents are limited"),
    ("3 ** 1000", "too large"),
    ("1e308 * 10", "too large"),
    ("10.0 ** 400", "too large"),
    ("(-8) ** 0.5", "not a real number"),
    ("__import__('os').system('true')", "Only numbers"),
    ("x + 1", "Only numbers"),
    ("True + 1", "Only numbers"),
    ("[1] * 3", "Only numbers"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 201, "longer than 200"),
]


@pytest.mark.parametrize(("expression", "expected"), CALCULATOR_TABLE)
def test_calculator(expression: str, expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(ToolFailure, match=expected):
            calculate(expression)
    else:
        result = calculate(expression)["result"]
        assert result == expected and type(result) is type(expected)


def test_the_calculator_refuses_huge_powers_fast() -> None:
    started = time.monotonic()
    for expression in ("999999 ** 1000", "(10 ** 100) ** 100", "2 ** 1000 * 2 ** 1000"):
        with pytest.raises(ToolFailure):
            calculate(expression)
    assert time.monotonic() - started < 0.1


def test_get_time_gives_the_local_time_and_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Sao_Paulo")
    time.tzset()
    try:
        result = builtin.get_time()
        now = datetime.fromisoformat(result["local_time"])
        assert abs(now.timestamp() - time.time()) < 5
        assert result["time_zone"] == "America/Sao_Paulo"
        assert result["utc_offset"] == "-03:00" and now.utcoffset() is not None
        assert result["weekday"] == now.strftime("%A")
        monkeypatch.setenv("TZ", "Not/AZone")
        assert builtin.local_zone_name() != "Not/AZone"
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_a_timer_rings_when_due() -> None:
    rang: list[tuple[str, float]] = []
    timers = Timers(on_ring=lambda label: rang.append((label, time.monotonic())))
    registry = ToolRegistry()
    registry.add(builtin_tools(timers))
    started = time.monotonic()
    output = json.loads(await registry.run("set_timer", '{"seconds": 1, "label": "tea"}', Approvals(False)))
    assert output["label"] == "tea" and output["seconds"] == 1 and timers.pending() == 1
    await asyncio.sleep(0.8)
    assert rang == []
    await asyncio.sleep(0.5)
    assert [label for label, _ in rang] == ["tea"]
    assert 1.0 <= rang[0][1] - started < 1.3
    assert timers.pending() == 0
    for bad in ('{"seconds": 0.5}', '{"seconds": 90000}', '{"seconds": "soon"}'):
        assert "A timer lasts" in _error(await registry.run("set_timer", bad, Approvals()))
    await registry.run("set_timer", '{"seconds": 1}', Approvals())
    timers.cancel_all()
    await asyncio.sleep(1.2)
    assert len(rang) == 1


# -- the wire events -----------------------------------------------------------------------------


def _item(call_id: str, name: str = "get_time", status: str = "completed") -> RealtimeConversationItemFunctionCall:
    return RealtimeConversationItemFunctionCall(
        type="function_call", id=f"item_{call_id}", call_id=call_id, name=name, arguments="{}", status=status
    )


def _typed(event: dict[str, Any]) -> Any:
    """What the engine hands the flow: the wire event, parsed as the engine parses it."""
    return parse_server_event(json.dumps(event))[1]


def _arguments_done(call_id: str, response_id: str = "resp_1") -> Any:
    return _typed(ResponseFunctionCallArgumentsDoneEvent(
        type="response.function_call_arguments.done", event_id="e1", response_id=response_id,
        item_id=f"item_{call_id}", output_index=0, call_id=call_id, name="get_time", arguments="{}",
    ).model_dump(exclude_none=True))


def _item_done(call_id: str, response_id: str = "resp_1", status: str = "completed") -> Any:
    return _typed(ResponseOutputItemDoneEvent(
        type="response.output_item.done", event_id="e2", response_id=response_id, output_index=0,
        item=_item(call_id, status=status),
    ).model_dump(exclude_none=True))


def _response_done(call_ids: list[str], response_id: str = "resp_1", status: str = "completed") -> Any:
    return _typed(ResponseDoneEvent(
        type="response.done", event_id="e3",
        response=RealtimeResponse(id=response_id, status=status, output=[_item(c) for c in call_ids]),
    ).model_dump(exclude_none=True))


def _check_output_event(typed: Any, call_id: str, output: str) -> None:
    event = typed.to_json()
    model = ConversationItemCreateEvent.model_validate(event)
    assert isinstance(model.item, RealtimeConversationItemFunctionCallOutput)
    assert (model.item.call_id, model.item.output) == (call_id, output)
    assert model.model_dump(exclude_none=True) == event


def test_output_events_are_openai_events() -> None:
    _check_output_event(FunctionCallOutput("call_1", '{"x": 1}'), "call_1", '{"x": 1}')
    wire = CreateResponse().to_json()
    assert ResponseCreateEvent.model_validate(wire).model_dump(exclude_none=True) == wire


def test_a_call_seen_three_times_starts_once_and_is_answered_once() -> None:
    flow = ToolCallFlow()
    step = flow.on_event(_arguments_done("call_1"))
    assert step.start == (FunctionCall("call_1", "get_time", "{}", "resp_1"),)
    assert flow.on_event(_item_done("call_1")).start == ()
    step = flow.on_event(_response_done(["call_1"]))
    assert step.start == () and step.send == ()  # the output is not there yet
    events = flow.on_output("call_1", "12:00")
    assert len(events) == 2
    _check_output_event(events[0], "call_1", "12:00")
    assert events[1] == CreateResponse()
    assert flow.on_output("call_1", "again") == ()
    assert flow.pending() == 0


def test_an_output_before_response_done_waits_for_it() -> None:
    flow = ToolCallFlow()
    flow.on_event(_item_done("call_1"))
    assert flow.on_output("call_1", "x") == (FunctionCallOutput("call_1", "x"),)
    assert flow.on_event(_response_done(["call_1"])).send == (CreateResponse(),)


def test_parallel_calls_get_one_response_create_after_the_last_output() -> None:
    flow = ToolCallFlow()
    step = flow.on_event(_response_done(["call_a", "call_b"]))  # the calls seen only here
    assert [call.call_id for call in step.start] == ["call_a", "call_b"]
    assert flow.pending() == 2
    assert flow.on_output("call_b", "b") == (FunctionCallOutput("call_b", "b"),)
    assert flow.on_output("call_a", "a") == (FunctionCallOutput("call_a", "a"), CreateResponse())


def test_a_cancelled_response_gets_its_outputs_but_no_new_response() -> None:
    flow = ToolCallFlow()
    flow.on_event(_arguments_done("call_1"))
    assert flow.on_event(_response_done(["call_1"], status="cancelled")).send == ()
    assert flow.on_output("call_1", "x") == (FunctionCallOutput("call_1", "x"),)


def test_incomplete_items_unknown_calls_and_other_events_start_nothing() -> None:
    flow = ToolCallFlow()
    assert flow.on_event(_item_done("call_1", status="incomplete")).start == ()
    assert flow.on_event(_typed({"type": "response.output_item.done", "item": {"type": "message"}})).start == ()
    with pytest.raises(BadEvent):  # a call without call_id or name is no call: the engine logs and drops it
        _typed({"type": "response.output_item.done", "item": {"type": "function_call"}})
    assert flow.on_event(_typed({"type": "response.audio_transcript.done", "transcript": "hi"})) == ToolStep()
    assert flow.on_event(_typed({"type": "response.done", "response": {"id": "r", "output": []}})).send == ()
    assert flow.on_output("call_unknown", "x") == ()
