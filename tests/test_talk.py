"""`sandra talk` end to end: the engine starts the embedded server, sends a spoken WAV, records the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.audio import read_wav
from rig.engine_helpers import is_audible
from rig.server_process import start_server
from rig.speech_samples import make_speech_wav

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)


def _talk(args: list[str], home: Path, **env_overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "c"), XDG_DATA_HOME=str(home / "d"),
               XDG_STATE_HOME=str(home / "s"), XDG_CACHE_HOME=str(home / "k"), **env_overrides)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "talk", *args], capture_output=True,
                          text=True, timeout=150, env=env, cwd=ROOT)


def test_talk_local_push_to_talk_turn(tmp_path):
    # Not a question a built-in tool answers (talk declares them): the test below asks one that is.
    question = make_speech_wav("what is your name", tmp_path / "question.wav")
    answer, events = tmp_path / "answer.wav", tmp_path / "events.jsonl"
    result = _talk(["--provider", "local", "--wav", str(question), "--out", str(answer), "--events", str(events)],
                   tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["user"] == ["what is your name"], summary
    assert summary["assistant"] and "Sandra" in summary["assistant"][0], summary
    assert summary["reconnects"] == 0
    assert is_audible(read_wav(answer)), "answer.wav holds no speech"

    lines = [json.loads(line) for line in events.read_text().splitlines()]
    names = {line["name"] for line in lines if line["type"] == "latency"}
    assert names == {"token_acquisition", "sdp_exchange", "connect", "response_latency"}
    states = [line["state"] for line in lines if line["type"] == "state"]
    assert states == ["connecting", "connected", "ended"]
    server_events = {line["event"] for line in lines if line["type"] == "server_event"}
    assert {"session.created", "response.done", "output_audio_buffer.started"} <= server_events
    assert "Traceback" not in result.stderr
    # the conversation is on disk too
    transcripts = list((tmp_path / "home" / "d").rglob("*.jsonl"))
    assert len(transcripts) == 1 and "what is your name" in transcripts[0].read_text()


def test_talk_a_spoken_question_answered_through_a_tool_is_timed(tmp_path):
    question = make_speech_wav("what time is it", tmp_path / "question.wav")
    result = _talk(["--provider", "local", "--wav", str(question)], tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [tool["name"] for tool in summary["tools"]] == ["get_time"], summary
    assert summary["assistant"] and summary["assistant"][0].startswith("It is"), summary
    assert summary["latency"]["response_latency"]["count"] == 1, summary["latency"]


def test_talk_wrong_key_fails_at_once_with_one_clear_line(tmp_path):
    question = make_speech_wav("hello", tmp_path / "q.wav")
    server = start_server(tmp_path, "--mode", "echo")
    try:
        result = _talk(["--provider", server.base_url, "--wav", str(question)], tmp_path / "home",
                       SANDRA_API_KEY="sk-wrong-key-000000000")
    finally:
        server.stop()
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sandra talk:") and "key" in last.lower(), result.stderr
    assert "Traceback" not in result.stderr and "sk-wrong-key" not in result.stderr + result.stdout


def test_talk_usage_error_exits_2(tmp_path):
    assert _talk(["--out", "x.wav"], tmp_path / "home").returncode == 2
    assert _talk(["--bogus"], tmp_path / "home").returncode == 2


def test_talk_hands_free_the_server_hears_the_end_of_speech(tmp_path):
    question = make_speech_wav("what is your name", tmp_path / "question.wav")
    result = _talk(["--provider", "local", "--wav", str(question), "--hands-free", "--duration", "1"],
                   tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["user"] == ["what is your name"], summary
    assert "Sandra" in summary["assistant"][0]
    assert summary["latency"]["response_latency"]["count"] == 1


def test_talk_typed_turns_are_answered_in_turn_with_tools_in_voice_and_text(tmp_path):
    answer, events = tmp_path / "answer.wav", tmp_path / "events.jsonl"
    result = _talk(["--provider", "local", "--text", "what is three plus four", "--text", "set a timer for two seconds",
                    "--out", str(answer), "--events", str(events)], tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["user"] == ["what is three plus four", "set a timer for two seconds"], summary
    assert "7" in summary["assistant"][0] and "timer" in summary["assistant"][1].lower(), summary
    assert [(tool["name"], tool["failed"]) for tool in summary["tools"]] == [("calculate", False), ("set_timer", False)]
    assert json.loads(summary["tools"][1]["arguments"])["seconds"] == 2
    assert is_audible(read_wav(answer)), "answer.wav holds no speech"
    # The first answer came before the second question went out: the stderr lines are in order.
    lines = [line for line in result.stderr.splitlines() if line.startswith(("user:", "assistant:"))]
    assert [line.split(":")[0] for line in lines] == ["user", "assistant", "user", "assistant"], lines
    tool_lines = [json.loads(line) for line in events.read_text().splitlines() if '"tool"' in line]
    assert [(t["name"], t["output"] is None) for t in tool_lines] == [
        ("calculate", True), ("calculate", False), ("set_timer", True), ("set_timer", False)]
    transcripts = list((tmp_path / "home" / "d").rglob("*.jsonl"))
    assert len(transcripts) == 1 and "set a timer for two seconds" in transcripts[0].read_text()


def test_talk_refuses_side_effecting_tools_unless_allowed(tmp_path):
    """A scripted model asks to open a page twice; only --allow-tools lets it run (the browser is `true`)."""
    import asyncio

    from rig.hostile_server import HostileServer
    from test_mcp_call import HOSTILE_KEY, ScriptedModel

    async def call(allow: list[str]) -> tuple[dict, str]:
        async with HostileServer(api_key=HOSTILE_KEY) as server:
            home = tmp_path / f"home-{len(allow)}"
            talk = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "main.py"), "talk", "--provider", server.base_url,
                "--text", "open example.org", *allow, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "c"), XDG_DATA_HOME=str(home / "d"),
                         XDG_STATE_HOME=str(home / "s"), XDG_CACHE_HOME=str(home / "k"), SANDRA_API_KEY=HOSTILE_KEY,
                         BROWSER="true"))
            try:
                model = ScriptedModel(await server.next_peer(30))
                await model.wait_received(lambda e: e["type"] == "session.update", 10, "the session's tools")
                assert "open_url" in model.tool_names()[0] and "set_timer" in model.tool_names()[0]
                await model.wait_received(lambda e: e["type"] == "response.create", 10, "the typed turn")
                output = await model.output_of(model.call("open_url", {"url": "https://example.org/"}))
                model.answer("Done.")
                model.audio_done()
            finally:
                _, err = await talk.communicate()
            return output, err.decode()

    refused, err = asyncio.run(call([]))
    assert "did not allow open_url" in refused["error"], refused
    assert "refused open_url (allow it with --allow-tools open_url)" in err
    allowed, _ = asyncio.run(call(["--allow-tools", "calculate,open_url"]))
    assert allowed == {"opened": "https://example.org/"}
