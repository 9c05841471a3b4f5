"""The real metrics receiver as a child process, in a private home, for the receiver tests."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (http://\S+?)/api/sandra/metrics")


def private_env(home: Path) -> dict[str, str]:
    """The environment with HOME and every XDG dir inside `home`, so nothing touches the user's files."""
    env = dict(os.environ)
    for var, sub in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_STATE_HOME", ".local/state"), ("XDG_CACHE_HOME", ".cache")):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    return env


class ReceiverProcess:
    """`python main.py metrics-server …` on a free loopback port (port 0: it prints the one it got)."""

    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        self.args = ["--port", "0", *args]
        self.stderr_path = home / f"receiver-stderr-{time.monotonic_ns()}.txt"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.first_line = ""

    def start(self, timeout: float = 20.0) -> ReceiverProcess:
        self._stderr = open(self.stderr_path, "w")  # a file, not a pipe: it can never fill and stall the child
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "metrics-server", *self.args],
            cwd=ROOT, env=private_env(self.home), stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        match = _LISTENING.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"the receiver did not start: {line!r} {self.stderr()}")
        self.first_line = line.strip()
        self.url = match.group(1)
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Ask it to stop and return its exit code (killed if it does not stop in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode


def run_receiver(home: Path, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run the command to completion (for arguments it must refuse)."""
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "metrics-server", *args], cwd=ROOT,
                          env=private_env(home), capture_output=True, text=True, timeout=timeout)
