"""The built-in local realtime server, run as a child process of the app.

A child process rather than a task in the app's loop: speech recognition and synthesis
must never stall the call's own loop, and a crash there must not take the window down.
The server gets a random key in SANDRA_SERVER_KEY (the same across restarts, so a
reconnect in flight still authenticates), listens on a free loopback port, and says so
on stdout with exactly one line, "listening on http://HOST:PORT/v1".

No orphans: `stop()` terminates (then kills), an atexit hook catches a forgotten
stop, and on Linux the child is asked to die with its parent (PR_SET_PDEATHSIG),
which covers a parent killed with SIGKILL. The death signal follows the thread that
started the child, so start it from the loop's thread (as the engine does).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import ctypes
import logging
import os
import re
import secrets
import signal
import sys
import time
import weakref
from collections.abc import Callable
from urllib.parse import urlsplit

from base import paths
from base.errors import ProviderError
from base.logs import redact, register_secret

log = logging.getLogger(__name__)

SERVER_KEY_ENV = "SANDRA_SERVER_KEY"
_LISTENING = re.compile(r"listening on (http://\S+/v1)\s*$")
_STDERR_LINES_KEPT = 20
_PR_SET_PDEATHSIG = 1

# Every server not yet stopped, for the atexit safety net.
_live: weakref.WeakSet[LocalServer] = weakref.WeakSet()


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: nothing to load in the child
    except (OSError, AttributeError):
        log.debug("prctl unavailable; relying on stop() and atexit to end the local server")
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


class LocalServer:
    """Start, watch, restart and stop the local realtime server."""

    def __init__(
        self,
        mode: str = "assistant",
        start_timeout: float = 30.0,
        stop_grace: float = 3.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.mode = mode
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.extra_args = extra_args
        self.server_key = "sk-sandra-" + secrets.token_urlsafe(32)
        register_secret(self.server_key)
        self.base_url: str | None = None
        self.restarts = 0
        self._port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES_KEPT)
        self._drains: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self, port: int) -> list[str]:
        # A frozen bundle is its own interpreter and entry point: the subcommand goes straight to it.
        entry = [sys.executable] if paths.is_frozen() else [sys.executable, str(paths.app_root() / "main.py")]
        return [*entry, "serve", "--host", "127.0.0.1", "--port", str(port), "--mode", self.mode, *self.extra_args]

    async def start(self) -> str:
        """Start the server if it is not running; returns its base URL."""
        async with self._lock:
            if not self.running:
                await self._launch(self._port)
            assert self.base_url is not None
            return self.base_url

    async def ensure_running(self) -> str:
        """The base URL of a running server, restarting a dead one on its old port if it can."""
        async with self._lock:
            if self.running and await self._listening():
                assert self.base_url is not None
                return self.base_url
            if self._process is not None:
                # Dead but not reaped yet (asyncio learns of an exit a moment later), or alive
                # with its port closed: useless either way, so make sure it is gone.
                await self._discard(self._process)
                self.restarts += 1
                log.warning("the local server exited (code %s); restarting it on port %s",
                            self._process.returncode, self._port)
            try:
                await self._launch(self._port)
            except ProviderError:
                if not self._port:
                    raise
                # Someone took the old port meanwhile: any free one will do.
                log.warning("port %s is no longer free; starting the local server on another", self._port)
                await self._launch(0)
            assert self.base_url is not None
            return self.base_url

    async def stop(self) -> None:
        """Terminate the server and wait for it; kill it if it does not go within the grace period."""
        async with self._lock:
            process = self._process
            if process is not None and process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), self.stop_grace)
                except asyncio.TimeoutError:
                    log.warning("the local server did not stop within %.0f s; killing it", self.stop_grace)
                    process.kill()
                    await process.wait()
            await self._end_drains()
            _live.discard(self)
            self.base_url = None

    async def _launch(self, port: int) -> None:
        await self._end_drains()
        self._stderr.clear()
        env = {**os.environ, SERVER_KEY_ENV: self.server_key, "PYTHONUNBUFFERED": "1"}
        command = self.command(port)
        log.info("starting the local server: %s", " ".join(command[1:]))
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            raise ProviderError(f"The built-in local server did not start: {exc}") from exc
        self._process = process
        _live.add(self)
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        assert process.stdout is not None and process.stderr is not None
        self._drains = [
            asyncio.create_task(self._read_stdout(process.stdout, listening)),
            asyncio.create_task(self._read_stderr(process.stderr)),
        ]
        started = time.monotonic()
        try:
            base_url = await asyncio.wait_for(self._wait_listening(process, listening), self.start_timeout)
        except asyncio.TimeoutError:
            await self._discard(process)
            raise ProviderError(self._failure(f"no answer within {self.start_timeout:.0f} s")) from None
        except ProviderError:
            await self._discard(process)
            raise
        self.base_url = base_url
        self._port = urlsplit(base_url).port or 0
        log.info("local server ready at %s (pid %s) in %.1f s", base_url, process.pid, time.monotonic() - started)

    async def _wait_listening(self, process: asyncio.subprocess.Process, listening: asyncio.Future[str]) -> str:
        exited = asyncio.ensure_future(process.wait())
        try:
            await asyncio.wait({listening, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if listening.done():
            return listening.result()
        # Let the stderr reader catch the last words before quoting them.
        await asyncio.wait(self._drains, timeout=1.0)
        raise ProviderError(self._failure(f"it exited with code {process.returncode}"))

    def _failure(self, what: str) -> str:
        tail = "; ".join(line for line in self._stderr if line)[-800:]
        detail = f". Its last messages: {tail}" if tail else ""
        return f"The built-in local server did not start: {what}{detail}"

    async def _read_stdout(self, stream: asyncio.StreamReader, listening: asyncio.Future[str]) -> None:
        # Keep reading after the line too: a full pipe would block the child.
        async for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip()
            match = _LISTENING.search(line)
            if match and not listening.done():
                listening.set_result(match.group(1))
            log.debug("local server: %s", line)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = redact(raw.decode("utf-8", errors="replace").rstrip())
            self._stderr.append(line)
            log.debug("local server stderr: %s", line)

    async def _listening(self) -> bool:
        """False when nothing accepts connections on the server's port any more.

        A timeout counts as alive: a busy server's full backlog is no reason to kill it.
        """
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self._port), 1.0)
        except asyncio.TimeoutError:
            return True
        except OSError:
            return False
        writer.close()
        return True

    async def _discard(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            try:
                process.kill()
            except ProcessLookupError:  # exited between the check and the signal
                pass
            await process.wait()
        await self._end_drains()

    async def _end_drains(self) -> None:
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        self._drains = []


@atexit.register
def terminate_all() -> None:
    """Last resort (at interpreter exit, or when the app must leave at once): no server
    outlives the app even if stop() was skipped."""
    for server in list(_live):
        pid = server.pid
        if server.running and pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
