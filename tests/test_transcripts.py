"""The transcript log survives a hard kill and prunes by retention."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from core.transcripts import TranscriptLog, list_transcripts, prune, read_transcript

ROOT = Path(__file__).resolve().parent.parent


def test_messages_are_on_disk_before_a_kill_9(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from core.transcripts import TranscriptLog
        log = TranscriptLog(Path({str(tmp_path)!r}), "abcdef0123456789")
        log.append("user", "what time is it")
        log.append("assistant", "It is ten past three.")
        print("written", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.kill()
    proc.wait(10)
    [path] = list_transcripts(tmp_path)
    messages = read_transcript(path)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "what time is it"), ("assistant", "It is ten past three.")]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_torn_last_line_is_skipped(tmp_path):
    log = TranscriptLog(tmp_path, "s1")
    log.append("user", "hello")
    log.close()
    with open(log.path, "a") as handle:
        handle.write('{"role": "assistant", "content": "Hel')
    assert [m["content"] for m in read_transcript(log.path)] == ["hello"]


def test_prune_removes_only_files_older_than_retention(tmp_path):
    old = TranscriptLog(tmp_path, "old-session", clock=lambda: 1_000_000.0)
    old.append("user", "old")
    old.close()
    new = TranscriptLog(tmp_path, "new-session")
    new.append("user", "new")
    new.close()
    now = time.time()
    os.utime(old.path, (now - 91 * 86400, now - 91 * 86400))
    assert prune(tmp_path, 90, now=now) == [old.path]
    assert list_transcripts(tmp_path) == [new.path]
    assert prune(tmp_path, 0, now=now + 10**9) == []


def test_unwritable_directory_is_reported_once_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = TranscriptLog(blocker / "transcripts", "s")
    log.append("user", "hello")
    log.append("user", "again")
    assert log.failed and log.path is None
