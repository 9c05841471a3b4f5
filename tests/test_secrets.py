"""No key leaks: a whole call with a known fake key, then every byte the app and the
server wrote or printed is searched for that key and for any ephemeral key (ek_…).

The key goes in the way a user's does (SANDRA_API_KEY for `talk`, SANDRA_SERVER_KEY
for the server), verbosity is turned up so debug lines are searched too, and HOME and
the XDG dirs are temporary, so "every file the app wrote" is every file under tmp.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from rig.server_process import ROOT, private_env, start_server
from rig.speech_samples import make_speech_wav

pytestmark = pytest.mark.timeout(150)

# OpenAI's and the local server's ephemeral keys: ek_ then a long random tail.
EPHEMERAL = re.compile(rb"ek_[A-Za-z0-9_-]{16,}")


def _run(args: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=timeout)


def _leaks(blob: bytes, secret: bytes, known_ephemeral: list[bytes]) -> list[str]:
    found = []
    if secret in blob:
        found.append("the API/server key")
    found += [f"ephemeral key {m.group()[:8].decode()}…" for m in EPHEMERAL.finditer(blob)]
    found += [f"issued ephemeral key {k[:8].decode()}…" for k in known_ephemeral if k in blob]
    return found


async def _issue_ephemeral(base_url: str, key: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/realtime/client_secrets", json={},
                             headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status == 200
            return (await response.json())["value"]


async def test_a_whole_call_leaks_no_key(tmp_path: Path) -> None:
    key = f"sk-leakcheck-{secrets.token_hex(16)}"  # fresh each run: a match can only be a leak
    # Assistant mode: a real answer with a transcript, so the transcript file is written and searched.
    server = start_server(tmp_path, "--mode", "assistant", server_key=key)
    try:
        # One ephemeral key we know, so its value is searched for literally, not only by shape.
        issued = await _issue_ephemeral(server.base_url, key)
        home = tmp_path / "home"
        env = private_env(home, key)
        env["SANDRA_API_KEY"] = key
        wav = make_speech_wav("what time is it", tmp_path / "q.wav")
        talk = _run(["talk", "-vv", "--provider", server.base_url, "--wav", str(wav), "--out",
                     str(tmp_path / "a.wav"), "--events", str(tmp_path / "ev.jsonl")], env)
        self_test = _run(["-vv", "--self-test"], env)
    finally:
        server.stop()

    assert talk.returncode == 0, talk.stderr.decode(errors="replace")[-2000:]
    assert b'"state"' in talk.stdout.splitlines()[-1], "no talk summary to search"
    assert (tmp_path / "ev.jsonl").stat().st_size > 0
    assert self_test.returncode == 0, self_test.stdout.decode(errors="replace")[-2000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    # The search must have something to search: the app's and the server's own logs.
    assert any(p.name == "talk.log" for p in written) and any(p.name == "server.log" for p in written)
    assert any(p.parent.name == "transcripts" for p in written), "no transcript was written"

    secret, known = key.encode(), [issued.encode()]
    leaks = {f"talk {name}": _leaks(blob, secret, known)
             for name, blob in (("stdout", talk.stdout), ("stderr", talk.stderr))}
    leaks |= {f"--self-test {name}": _leaks(blob, secret, known)
              for name, blob in (("stdout", self_test.stdout), ("stderr", self_test.stderr))}
    leaks |= {str(p.relative_to(tmp_path)): _leaks(p.read_bytes(), secret, known) for p in written}
    assert {where: what for where, what in leaks.items() if what} == {}


def test_the_search_finds_a_planted_key() -> None:
    """The check above can fail: a key or an ek_ value anywhere in a blob is reported."""
    key = b"sk-leakcheck-" + secrets.token_hex(8).encode()
    assert _leaks(b"x " + key + b" y", key, []) == ["the API/server key"]
    ephemeral = b"ek_" + secrets.token_urlsafe(24).encode()
    assert _leaks(b"Authorization: Bearer " + ephemeral, key, [ephemeral])[0].startswith("ephemeral key ek_")
    assert _leaks(b"Authorization: Bearer [redacted]", key, [ephemeral]) == []
