"""The real local realtime server as a child process, for tests and benchmarks.

It runs `main.py serve` with HOME and the XDG dirs inside a temporary folder, waits
for its "listening on …" line and reads the real port from it (tests use --port 0).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_SERVER_KEY = "sk-test-server-key-0123456789"
_LISTENING = re.compile(r"listening on (http://\S+/v1)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    base_url: str
    server_key: str
    home: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait; kill if it does not stop in time. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"the server did not stop within {timeout} s of SIGTERM") from None
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


def private_env(home: Path, server_key: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for var, sub in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_STATE_HOME", ".local/state"), ("XDG_CACHE_HOME", ".cache")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env.pop("SANDRA_SERVER_KEY", None)
    if server_key is not None:
        env["SANDRA_SERVER_KEY"] = server_key
    return env


def start_server(tmp: Path, *args: str, server_key: str | None = TEST_SERVER_KEY,
                 timeout: float = 60) -> ServerProcess:
    """Start `main.py serve --port 0 ARGS` and wait until it listens."""
    home = tmp / "server-home"
    home.mkdir(parents=True, exist_ok=True)
    stderr_path = tmp / "server-stderr.log"
    command = [sys.executable, str(ROOT / "main.py"), "serve", "--port", "0", "-v", *args]
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, env=private_env(home, server_key), stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                return ServerProcess(proc, match.group(1), server_key or "", home, stderr_path)
            if line:
                continue
        if proc.poll() is not None:
            break
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    raise AssertionError(f"the server did not start (exit {proc.returncode}); stdout: {''.join(seen)!r}; "
                         f"stderr: {stderr_path.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def running_server(tmp: Path, *args: str, server_key: str | None = TEST_SERVER_KEY) -> Iterator[ServerProcess]:
    """start_server() for the length of a with-block, which must end in a clean stop."""
    process = start_server(tmp, *args, server_key=server_key)
    try:
        yield process
    finally:
        code = process.stop()
    assert code == 0, process.stderr()[-3000:]
