"""`serve --quiet-audio`: no RTP at all while the server is not answering (issue #14).

A real call to the real server process: the client counts the RTP packets that reach
it (its receiver's inbound-rtp stats) while idle, then a spoken question must still be
answered out loud, and the server must fall quiet again after the answer and after a
barge-in. The streaming server is measured the same way, so the count is known to see
packets when there are some.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from _server_fixtures import connect, question  # noqa: F401 - fixtures
from base.pcm import FRAME_SAMPLES, level_dbfs
from rig.realtime_client import RealtimeClient
from rig.server_process import ServerProcess, start_server
from server.realtime.audio_out import OutputTrack, Pacing

pytestmark = pytest.mark.timeout(150)

IDLE_S = 2.5


async def rtp_packets(client: RealtimeClient) -> int:
    """RTP packets the client has received on its incoming audio so far."""
    stats = await client.pc.getStats()
    return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")


@pytest.mark.parametrize("pacing", list(Pacing))
async def test_a_quiet_track_gives_no_frame_until_audio_is_queued(pacing: Pacing) -> None:
    track = OutputTrack(pacing, quiet=True)
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.2)  # ten frame times: a streaming track would have sent silence by now
    assert not waiting.done()
    loud = np.full(2 * FRAME_SAMPLES, 8000, dtype=np.int16)
    if pacing is Pacing.CLOCK:  # an answer, two frames
        playback = track.play(loud)
    else:  # echo: one received frame
        playback = None
        track.push(loud[:FRAME_SAMPLES])
    frame = await asyncio.wait_for(waiting, 1)
    assert frame.to_ndarray().max() == 8000
    if playback is not None:  # the rest of the answer, then quiet again
        await track.recv()
        assert await playback.finished
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.1)
    assert not waiting.done()
    track.stop()  # a stopped track ends the waiting recv() instead of leaving it hanging
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1)


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory):
    process = start_server(tmp_path_factory.mktemp("quiet"), "--quiet-audio")
    yield process
    assert process.stop() == 0, process.stderr()


async def _packets_while_idle(client: RealtimeClient, seconds: float) -> int:
    before = await rtp_packets(client)
    await asyncio.sleep(seconds)
    return await rtp_packets(client) - before


async def test_a_quiet_server_sends_nothing_while_idle_and_still_answers(quiet_server: ServerProcess,
                                                                         question) -> None:
    client = await connect(quiet_server)
    try:
        assert await rtp_packets(client) == 0, "audio arrived before anything was asked"
        assert await _packets_while_idle(client, IDLE_S) == 0
        assert client.audio.samples == []
        mark = await client.push_to_talk(question)
        started = await client.wait_for("output_audio_buffer.started", since=mark, timeout=30)
        stopped = await client.wait_for("output_audio_buffer.stopped", since=mark, timeout=30)
        answer = client.audio.since(started["_received_at"])
        assert level_dbfs(answer) > -40, "the answer did not play"
        # About as much audio as the answer lasted: sent paced, not in a burst and not padded.
        answer_s = len(answer) / 48000
        assert abs(answer_s - (stopped["_received_at"] - started["_received_at"])) < 0.5, answer_s
        await asyncio.sleep(0.3)  # the last packets in flight
        assert await _packets_while_idle(client, IDLE_S) == 0, "audio went on after the answer"
        # A barge-in falls quiet as well.
        mark = await client.push_to_talk(question)
        await client.wait_for("output_audio_buffer.started", since=mark, timeout=30)
        client.send({"type": "response.cancel"})
        client.send({"type": "output_audio_buffer.clear"})
        await client.wait_for("output_audio_buffer.cleared", since=mark)
        await asyncio.sleep(0.3)
        assert await _packets_while_idle(client, IDLE_S) == 0, "audio went on after a barge-in"
    finally:
        await client.close()


async def test_the_streaming_server_sends_all_the_time(tmp_path) -> None:
    server = start_server(tmp_path)
    try:
        client = await connect(server)
        try:
            await asyncio.sleep(0.5)
            started = time.monotonic()
            packets = await _packets_while_idle(client, IDLE_S)
            elapsed = time.monotonic() - started
        finally:
            await client.close()
    finally:
        assert server.stop() == 0
    assert packets >= 0.8 * elapsed / 0.02, f"{packets} packets in {elapsed:.1f} s"
