"""The server's HTTP side, against the real server process: every refusal has its status
and OpenAI's JSON error shape; tokens honour their TTL; the fault flags do what they say."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from base import loopback_ice
from rig.realtime_client import RealtimeClient, ephemeral_key
from rig.server_process import ROOT, ServerProcess, private_env, running_server, start_server

pytestmark = pytest.mark.timeout(90)
BIG = b"x" * (64 * 1024 + 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    process = start_server(tmp_path_factory.mktemp("http"), "--mode", "echo",
                           "--allow-origin", "http://localhost:3000")
    yield process
    assert process.stop() == 0, process.stderr()


@pytest.fixture(scope="module")
def offer_sdp() -> str:
    """A real offer (audio + data channel) from aiortc."""
    async def make() -> str:
        loopback_ice.acquire_loopback_only()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("audio", direction="sendrecv")
            pc.createDataChannel("oai-events")
            await pc.setLocalDescription(await pc.createOffer())
            return pc.localDescription.sdp
        finally:
            await pc.close()
            loopback_ice.release_loopback_only()
    return asyncio.run(make())


async def request(method: str, url: str, **kwargs) -> tuple[int, dict, dict | str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.request(method, url, **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else await response.text()
            return response.status, dict(response.headers), body


def assert_error(status: int, body, expected_status: int, code: str | None = None) -> dict:
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    if code:
        assert error["code"] == code
    return error


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---- client_secrets ----------------------------------------------------------------

async def test_token_has_openai_shape_and_honours_ttl(server: ServerProcess) -> None:
    for ttl in (10, 600, 7200):
        before = time.time()
        status, _, body = await request("POST", f"{server.base_url}/realtime/client_secrets",
                                        json={"expires_after": {"anchor": "created_at", "seconds": ttl}},
                                        headers=auth(server.server_key))
        assert status == 200, body
        assert body["value"].startswith("ek_") and len(body["value"]) > 20
        assert before + ttl - 2 <= body["expires_at"] <= time.time() + ttl + 1
        assert body["session"]["type"] == "realtime"
    status, _, body = await request("POST", f"{server.base_url}/realtime/client_secrets",
                                    headers=auth(server.server_key))
    assert status == 200 and abs(body["expires_at"] - time.time() - 600) < 3
    assert body["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"  # OpenAI's default


async def test_token_session_settings_come_back(server: ServerProcess) -> None:
    session = {"type": "realtime", "instructions": "Be brief.",
               "audio": {"input": {"turn_detection": None}, "output": {"voice": "cedar"}}}
    status, _, body = await request("POST", f"{server.base_url}/realtime/client_secrets",
                                    json={"session": session}, headers=auth(server.server_key))
    assert status == 200
    assert body["session"]["instructions"] == "Be brief."
    assert body["session"]["audio"]["input"]["turn_detection"] is None
    assert body["session"]["audio"]["output"]["voice"] == "cedar"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer "}])
async def test_token_needs_the_server_key(server: ServerProcess, headers: dict) -> None:
    status, _, body = await request("POST", f"{server.base_url}/realtime/client_secrets", json={}, headers=headers)
    assert_error(status, body, 401)


@pytest.mark.parametrize("payload,param", [
    ({"expires_after": {"seconds": 9}}, "expires_after.seconds"),
    ({"expires_after": {"seconds": 7201}}, "expires_after.seconds"),
    ({"expires_after": {"seconds": "600"}}, "expires_after.seconds"),
    ({"expires_after": {"anchor": "now", "seconds": 60}}, "expires_after.anchor"),
    ({"expires_after": 5}, "expires_after"),
    ({"session": {"instructions": 42}}, "session.instructions"),
    ({"session": {"audio": {"input": {"turn_detection": {"type": "magic"}}}}},
     "session.audio.input.turn_detection.type"),
    ({"session": "realtime"}, "session"),
])
async def test_token_refuses_bad_fields(server: ServerProcess, payload: dict, param: str) -> None:
    status, _, body = await request("POST", f"{server.base_url}/realtime/client_secrets", json=payload,
                                    headers=auth(server.server_key))
    assert assert_error(status, body, 400)["param"] == param


async def test_token_refuses_bad_bodies(server: ServerProcess) -> None:
    url = f"{server.base_url}/realtime/client_secrets"
    headers = auth(server.server_key)
    status, _, body = await request("POST", url, data=b"{not json", headers={**headers, "Content-Type": "application/json"})
    assert_error(status, body, 400, "invalid_json")
    status, _, body = await request("POST", url, data=b"[1, 2]", headers={**headers, "Content-Type": "application/json"})
    assert_error(status, body, 400)
    status, _, body = await request("POST", url, data=b"seconds=60", headers={**headers, "Content-Type": "text/plain"})
    assert_error(status, body, 415)
    status, _, body = await request("POST", url, data=BIG, headers={**headers, "Content-Type": "application/json"})
    assert_error(status, body, 413)


async def test_a_large_body_without_length_is_cut_off(server: ServerProcess) -> None:
    async def chunks():
        for _ in range(40):
            yield b" " * 4096  # 160 KB in all, sent chunked: no Content-Length to check up front

    status, _, body = await request("POST", f"{server.base_url}/realtime/client_secrets", data=chunks(),
                                    headers={**auth(server.server_key), "Content-Type": "application/json"})
    assert_error(status, body, 413)


# ---- calls ---------------------------------------------------------------------------

async def test_calls_refuse_bad_keys_and_bodies(server: ServerProcess, offer_sdp: str) -> None:
    url = f"{server.base_url}/realtime/calls"
    sdp_type = {"Content-Type": "application/sdp"}
    status, _, body = await request("POST", url, data=offer_sdp, headers={**auth("ek_unknown_0123456789"), **sdp_type})
    assert_error(status, body, 401, "invalid_api_key")
    status, _, body = await request("POST", url, data=offer_sdp, headers={**auth(server.server_key), **sdp_type})
    assert_error(status, body, 401)  # the server key itself is not an ephemeral key
    key = await ephemeral_key(server.base_url, server.server_key)
    status, _, body = await request("POST", url, data=offer_sdp,
                                    headers={**auth(key), "Content-Type": "application/json"})
    assert_error(status, body, 415)
    for bad in ("hello", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
                offer_sdp.split("m=application")[0],  # audio only: no data channel
                offer_sdp.replace("m=audio", "m=video"),  # no audio
                ):
        status, _, body = await request("POST", url, data=bad, headers={**auth(key), **sdp_type})
        assert_error(status, body, 400, "invalid_offer")
    status, _, body = await request("POST", url, data=b"\xff\xfe" * 10, headers={**auth(key), **sdp_type})
    assert_error(status, body, 400, "invalid_offer")
    status, _, body = await request("POST", url, data=BIG, headers={**auth(key), **sdp_type})
    assert_error(status, body, 413)


async def test_unknown_path_and_wrong_method(server: ServerProcess) -> None:
    for path in ("/v1/nothing", "/", "/v1/realtime/calls/rtc_x/y"):
        status, _, body = await request("POST", f"{server.base_url.removesuffix('/v1')}{path}")
        assert_error(status, body, 404)
    for method, path in (("GET", "/realtime/calls"), ("PUT", "/realtime/client_secrets"), ("DELETE", "/realtime")):
        status, _, body = await request(method, f"{server.base_url}{path}")
        assert_error(status, body, 405)


async def test_legacy_path_makes_a_call(server: ServerProcess) -> None:
    key = await ephemeral_key(server.base_url, server.server_key)
    client = await RealtimeClient.connect(server.base_url, key, path="/realtime?model=gpt-realtime")
    try:
        assert (await client.wait_for("session.created"))["type"] == "session.created"
    finally:
        await client.close()


async def test_cors_allow_list(server: ServerProcess) -> None:
    url = f"{server.base_url}/realtime/calls"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    status, headers, _ = await request("OPTIONS", url, headers={"Origin": "http://localhost:3000", **preflight})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "authorization" in headers["Access-Control-Allow-Headers"].lower()
    status, headers, body = await request("OPTIONS", url, headers={"Origin": "http://evil.example", **preflight})
    assert_error(status, body, 403)
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = await request("POST", f"{server.base_url}/realtime/client_secrets",
                                       headers={"Origin": "http://localhost:3000", **auth(server.server_key)})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Location" in headers["Access-Control-Expose-Headers"]


async def test_ephemeral_key_expires(server: ServerProcess, offer_sdp: str) -> None:
    key = await ephemeral_key(server.base_url, server.server_key, ttl_s=10)
    await asyncio.sleep(10.5)
    status, _, body = await request("POST", f"{server.base_url}/realtime/calls", data=offer_sdp,
                                    headers={**auth(key), "Content-Type": "application/sdp"})
    assert_error(status, body, 401, "invalid_api_key")


# ---- limits, faults, start-up --------------------------------------------------------

async def test_more_calls_than_max_calls_get_503(tmp_path: Path) -> None:
    process = start_server(tmp_path, "--mode", "echo", "--max-calls", "1")
    try:
        key = await ephemeral_key(process.base_url, process.server_key)
        first = await RealtimeClient.connect(process.base_url, key)
        try:
            with pytest.raises(AssertionError, match="503"):
                await RealtimeClient.connect(process.base_url, key)
        finally:
            await first.close()
        # The slot frees once the hang-up reaches the server.
        deadline = time.monotonic() + 10
        while True:
            try:
                again = await RealtimeClient.connect(process.base_url, key)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the slot was never freed"
                await asyncio.sleep(0.2)
        await again.close()
    finally:
        assert process.stop() == 0


async def test_busy_answer_has_retry_after(tmp_path: Path, offer_sdp: str) -> None:
    with running_server(tmp_path, "--mode", "echo", "--max-calls", "1") as process:
        key = await ephemeral_key(process.base_url, process.server_key)
        url = f"{process.base_url}/realtime/calls"
        headers = {**auth(key), "Content-Type": "application/sdp"}
        status, _, _ = await request("POST", url, data=offer_sdp, headers=headers)
        assert status == 201  # the offer's peer never connects: it holds the slot
        status, response_headers, body = await request("POST", url, data=offer_sdp, headers=headers)
        assert_error(status, body, 503, "too_many_calls")
        assert int(response_headers["Retry-After"]) > 0


async def test_token_fault_fails_the_next_requests(tmp_path: Path) -> None:
    with running_server(tmp_path, "--mode", "echo", "--fault-token-status", "429",
                        "--fault-token-count", "2") as process:
        url = f"{process.base_url}/realtime/client_secrets"
        for _ in range(2):
            status, headers, body = await request("POST", url, json={}, headers=auth(process.server_key))
            assert_error(status, body, 429)
            assert int(headers["Retry-After"]) >= 1
        status, _, body = await request("POST", url, json={}, headers=auth(process.server_key))
        assert status == 200 and body["value"].startswith("ek_")


async def test_sdp_delay_fault(tmp_path: Path, offer_sdp: str) -> None:
    with running_server(tmp_path, "--mode", "echo", "--fault-sdp-delay-ms", "600") as process:
        key = await ephemeral_key(process.base_url, process.server_key)
        started = time.monotonic()
        status, _, _ = await request("POST", f"{process.base_url}/realtime/calls", data=offer_sdp,
                                     headers={**auth(key), "Content-Type": "application/sdp"})
        assert status == 201 and time.monotonic() - started >= 0.6


async def test_generated_server_key_is_private_and_works(tmp_path: Path) -> None:
    process = start_server(tmp_path, "--mode", "echo", server_key=None)
    try:
        key_file = process.home / ".local/share/sandra/server_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        status, _, body = await request("POST", f"{process.base_url}/realtime/client_secrets", json={},
                                        headers=auth(key))
        assert status == 200, body
    finally:
        assert process.stop() == 0
        output = process.stderr()
        assert key not in output and str(key_file) not in output


def test_non_loopback_host_needs_allow_remote(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "serve", "--host", "0.0.0.0", "--port", "0"],
                            env=private_env(tmp_path, "sk-test-server-key-0123456789"), capture_output=True,
                            text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 2 and "--allow-remote" in result.stderr and "Traceback" not in result.stderr


def test_stop_on_sigterm_closes_open_calls(tmp_path: Path) -> None:
    process = start_server(tmp_path, "--mode", "echo")

    async def open_call() -> RealtimeClient:
        return await RealtimeClient.connect(process.base_url, await ephemeral_key(process.base_url, process.server_key))

    async def run() -> None:
        client = await open_call()
        try:
            assert process.stop() == 0
        finally:
            await client.close()

    asyncio.run(run())
    log = process.stderr()
    assert "reason: server stopping" in log and "closed 1 open call(s)" in log
