"""Where a process's CPU time goes: a py-spy recording of it, summed per function.

py-spy samples another process from outside (no change to the app), here in its
"raw" format: one line per distinct stack, frames root-first separated by ";", then a
space and the number of samples. Own time is the innermost frame's; total time counts
a function once per stack it appears in.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 100  # py-spy's default; enough to rank functions over a 15 s window


def py_spy() -> str:
    """The py-spy executable beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy (a test extra)")
    return found


class SpyRecording:
    """py-spy recording `pid` for `seconds` (idle threads left out) into `out`.

    Python frames only, without pausing the app: pausing it for each sample (which native
    frames need) starved its audio and cut its CPU from ~13 % to ~4 % here, even at 20 Hz.
    So Qt's own C++ work shows as time spent in the event loop's run_forever."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.out = out
        self._proc = subprocess.Popen(
            [py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate",
             str(SAMPLE_RATE_HZ), "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self, timeout: float = 30.0) -> None:
        _, err = self._proc.communicate(timeout=timeout)
        if self._proc.returncode != 0:
            log.warning("py-spy failed (%d): %s", self._proc.returncode, err.decode(errors="replace")[-500:])


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (utime + stime) so far per thread of `pid`, keyed "tid name" (name from comm)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        main = " (main)" if task.name == str(pid) else ""
        found[f"{task.name} {comm}{main}"] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def thread_shares(before: dict[str, float], after: dict[str, float], seconds: float) -> list[tuple[str, float]]:
    """Each thread's CPU over the window as % of one core, busiest first."""
    shares = [(name, 100.0 * (cpu - before.get(name, 0.0)) / seconds) for name, cpu in after.items()]
    return sorted((s for s in shares if s[1] > 0), key=lambda s: -s[1])


@dataclass(frozen=True)
class Profile:
    samples: int
    own: Counter[str]
    total: Counter[str]


def parse(lines: list[str]) -> Profile:
    """Own and total samples per frame from py-spy raw lines ("a;b;c 12")."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] += n
        # dict keeps stack order, so ties in total time list the outer frame first on every run
        for frame in dict.fromkeys(frames):
            total[frame] += n
    return Profile(samples, own, total)


def print_top(stacks: Path, out: IO[str], top: int = 15) -> None:
    """The functions with the most own time, and with the most total time, as % of samples."""
    profile = parse(stacks.read_text().splitlines())
    if not profile.samples:
        out.write("(no samples)\n")
        return
    for title, counts in (("own", profile.own), ("total", profile.total)):
        out.write(f"top {top} by {title} time ({profile.samples} samples):\n")
        for frame, n in counts.most_common(top):
            out.write(f"  {100.0 * n / profile.samples:5.1f} %  {frame}\n")
