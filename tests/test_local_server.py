"""The local server as a real child process: start, answer, restart after a kill, stop, no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from core import local_server
from core.config import Settings
from base.errors import ProviderError
from core.local_server import LocalServer
from core.providers import make_provider

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        not (ROOT / "server" / "realtime" / "cli.py").exists(),
        reason="server/realtime/cli.py (the `serve` command) is not in this checkout yet",
    ),
    pytest.mark.usefixtures("private_home"),
]

# Echo mode: the same process, arguments and key handling, without loading speech models.
MODE = "echo"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped yet) counts as gone, but only once its other threads
    # are gone too: until then they still hold its files, the listening socket included.
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        return not (zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1)
    except OSError:
        return False


async def wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return not alive(pid)


async def key_from(server: LocalServer) -> str:
    """A real client_secrets request with the server's key: it must be accepted."""
    provider = make_provider(Settings(provider="local"), None, server.base_url, server.server_key)
    async with aiohttp.ClientSession() as http:
        return (await provider.create_ephemeral_key(http, {})).value


async def test_start_answer_restart_and_stop() -> None:
    server = LocalServer(mode=MODE)
    try:
        base_url = await server.start()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert server.running and server.base_url == base_url
        assert await key_from(server)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base_url}/no-such-thing") as response:
                assert 400 <= response.status < 500
        # start() again is harmless: still the same process.
        pid = server.pid
        assert await server.start() == base_url and server.pid == pid

        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert await wait_gone(pid, 5)
        assert await server.ensure_running() == base_url  # same port: an in-flight reconnect finds it
        assert server.pid != pid and server.restarts == 1
        assert await key_from(server)  # and the same key still works
        # Running already: nothing to do.
        assert await server.ensure_running() == base_url and server.restarts == 1
    finally:
        pid = server.pid
        await server.stop()
    assert pid is not None and not alive(pid)
    assert not server.running and server.base_url is None
    await server.stop()  # twice is fine


async def test_restart_moves_to_a_free_port_when_the_old_one_is_taken() -> None:
    server = LocalServer(mode=MODE)
    try:
        old_url = await server.start()
        old_port = int(old_url.rsplit(":", 1)[1].split("/")[0])
        await server.stop()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", old_port))
            squatter.listen()
            new_url = await server.ensure_running()
        assert new_url != old_url and server.running
        assert await key_from(server)
    finally:
        await server.stop()


async def test_failed_start_quotes_the_servers_last_words_and_leaves_nothing() -> None:
    server = LocalServer(mode=MODE, extra_args=("--no-such-option",))
    with pytest.raises(ProviderError) as info:
        await server.start()
    message = str(info.value)
    assert message.startswith("The built-in local server did not start")
    assert "no-such-option" in message and "exited with code 2" in message
    assert not server.running


async def test_start_timeout_kills_the_child() -> None:
    server = LocalServer(mode=MODE, start_timeout=0.2)
    with pytest.raises(ProviderError, match="no answer within"):
        await server.start()
    pid = server.pid
    assert pid is not None and await wait_gone(pid, 2)


def test_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    server = LocalServer()
    assert server.command(0) == [sys.executable, str(ROOT / "main.py"), "serve", "--host", "127.0.0.1",
                                 "--port", "0", "--mode", "assistant"]
    monkeypatch.setattr(local_server.paths, "is_frozen", lambda: True)
    assert server.command(4242)[:3] == [sys.executable, "serve", "--host"]
    assert "4242" in server.command(4242)


def test_every_server_has_its_own_secret_key() -> None:
    a, b = LocalServer(), LocalServer()
    assert a.server_key != b.server_key and len(a.server_key) >= 32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
async def test_child_dies_with_a_parent_killed_without_warning(tmp_path: Path) -> None:
    # A parent that starts the server, reports the child's pid, then waits to be SIGKILLed.
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from core.local_server import LocalServer

        async def main():
            server = LocalServer(mode={MODE!r})
            await server.start()
            print(server.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, parent.stdout.readline), 30)
        child_pid = int(line)
        assert alive(child_pid)
        parent.kill()
        parent.wait(5)
        assert await wait_gone(child_pid, 5), "the local server outlived its parent"
    finally:
        parent.kill()
        parent.wait(5)
        if child_pid is not None and alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
