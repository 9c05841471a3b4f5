"""Fixtures shared by the tests of real calls to the real server process: an assistant
server per module, a spoken question, a connected client. Import the fixtures by name."""

from __future__ import annotations

import numpy as np
import pytest

from rig.realtime_client import RealtimeClient, ephemeral_key
from rig.server_process import ServerProcess, start_server
from rig.speech_samples import make_speech_wav, missing_tools, read_wav_int16


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The server in assistant mode, streaming audio (its default), for the whole module."""
    process = start_server(tmp_path_factory.mktemp("server"))
    yield process
    assert process.stop() == 0, process.stderr()


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """'what time is it', spoken by espeak-ng at 48 kHz."""
    if missing_tools():
        pytest.fail(f"missing {missing_tools()}: run ./bootstrap.sh test")
    samples, rate = read_wav_int16(make_speech_wav("what time is it", tmp_path_factory.mktemp("q") / "q.wav"))
    assert rate == 48000
    return samples


async def connect(server: ServerProcess) -> RealtimeClient:
    """A connected client (push-to-talk session) that has seen session.created."""
    client = await RealtimeClient.connect(server.base_url, await ephemeral_key(server.base_url, server.server_key))
    await client.wait_for("session.created")
    return client
