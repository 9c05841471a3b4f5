"""Load on the real server process: calls at once, and many in a row without leaks."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest

from base.pcm import level_dbfs
from rig.realtime_client import RealtimeClient, ephemeral_key
from rig.server_process import ServerProcess, start_server

pytestmark = pytest.mark.timeout(150)


def threads_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tasks_alive(server: ServerProcess) -> int:
    counts = re.findall(r"tasks alive (\d+)", server.stderr())
    assert counts, "no call has ended yet"
    return int(counts[-1])


async def wait_calls_ended(server: ServerProcess, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while server.stderr().count("reason: connection closed") < count:
        assert time.monotonic() < deadline, f"only {server.stderr().count('reason: connection closed')} of " \
                                            f"{count} calls ended on the server"
        await asyncio.sleep(0.1)


async def one_call(server: ServerProcess, key: str) -> None:
    client = await RealtimeClient.connect(server.base_url, key)
    try:
        await client.wait_for("session.created", timeout=10)
    finally:
        await client.close()


async def test_many_calls_in_a_row_leak_nothing(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--mode", "echo")
    try:
        key = await ephemeral_key(server.base_url, server.server_key)
        for _ in range(5):  # warm-up: thread pools and caches reach their steady size
            await one_call(server, key)
        await wait_calls_ended(server, 5)
        threads, fds, tasks = threads_of(server.pid), open_fds(server.pid), tasks_alive(server)
        for _ in range(100):
            await one_call(server, key)
        await wait_calls_ended(server, 105)
        await asyncio.sleep(0.5)
        assert threads_of(server.pid) <= threads + 1, (threads, threads_of(server.pid))
        assert open_fds(server.pid) <= fds + 2, (fds, open_fds(server.pid))
        assert tasks_alive(server) <= tasks + 1, (tasks, tasks_alive(server))
    finally:
        assert server.stop() == 0, server.stderr()[-3000:]


async def test_four_calls_at_once_all_answer(tmp_path: Path) -> None:
    from rig.speech_samples import make_speech_wav, read_wav_int16

    question, _ = read_wav_int16(make_speech_wav("what is the date", tmp_path / "date.wav"))
    server = start_server(tmp_path)  # assistant mode

    async def call(key: str) -> tuple[str, str, float]:
        client = await RealtimeClient.connect(server.base_url, key)
        try:
            await client.wait_for("session.created")
            mark = await client.push_to_talk(question)
            heard = await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark,
                                          timeout=30)
            done = await client.wait_for("response.done", since=mark, timeout=30)
            assert done["response"]["status"] == "completed"
            started = (await client.wait_for("output_audio_buffer.started", since=mark))["_received_at"]
            return heard["transcript"], done["response"]["output"][0]["content"][0]["transcript"], \
                level_dbfs(client.audio.since(started))
        finally:
            await client.close()

    try:
        keys = [await ephemeral_key(server.base_url, server.server_key) for _ in range(4)]
        results = await asyncio.gather(*(call(key) for key in keys))
        for heard, answer, level in results:
            assert "date" in heard and answer.startswith("Today is") and level > -40, (heard, answer, level)
        await wait_calls_ended(server, 4)
    finally:
        assert server.stop() == 0, server.stderr()[-3000:]
