"""Client CPU during a hands-free call with the window and live plot up: cpu_pct.

`python main.py` starts as the user starts it (offscreen Qt platform) with a private
HOME whose settings say provider local and hands-free, on the private PulseAudio rig
so its microphone and speaker are real sounddevice streams. Once the app's log says
the call is connected and a warm-up has passed, a spoken question is played into the
virtual microphone (the server's VAD ends the turn and the answer is played and
plotted), and the app process's own CPU time (utime + stime in /proc/PID/stat, which
leaves out the local server child) is read over the window. 100 % is one core.

    python -m bench.app_cpu [--quick] [--profile DIR]

--profile DIR also samples the app with py-spy over each measured window and writes
DIR/app_cpu_N.txt (collapsed stacks) and the top functions by own and total time; the
sampler costs the app some CPU of its own, so those runs' cpu_pct reads a little high.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.profile_stacks import SpyRecording, print_top, thread_cpu_seconds, thread_shares

from bench.figures import Figures, figure, print_table
from bench.rig import ROOT, PulseRig, private_env
from base import paths
from core.config import SETTINGS_FILE, Settings
from server.realtime.tts import Synthesizer

log = logging.getLogger(__name__)

CONNECTED_MARK = "-> Connected"  # core.call.state's log line for the state change
CONNECT_TIMEOUT_S = 60.0
WARMUP_S = 3.0  # the first plot draw, device start-up and the server's warm-up are not the steady state
QUESTION = "what time is it"


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_connected(home: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited ({proc.returncode}) before the call connected")
        if any(CONNECTED_MARK in p.read_text(errors="replace") for p in home.rglob("sandra.log")):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the app's call did not connect within {CONNECT_TIMEOUT_S:.0f} s")


def one_window(rig: PulseRig, home: Path, question: object, seconds: float, profile: Path | None = None) -> float:
    """Start the app, measure its CPU % over `seconds` of a connected hands-free call, close it.

    profile: a py-spy recording of the window is written there (collapsed stacks)."""
    env = private_env(home, None)
    env.update(rig.env, QT_QPA_PLATFORM="offscreen")
    config = Path(env["XDG_CONFIG_HOME"]) / paths.APP_NAME
    config.mkdir(parents=True, exist_ok=True)
    (config / SETTINGS_FILE).write_text(json.dumps(Settings(provider="local", hands_free=True).to_json()))
    proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_connected(home, proc)
        time.sleep(WARMUP_S)
        rig.play_into_mic(question)  # type: ignore[arg-type]
        spy = None if profile is None else SpyRecording(proc.pid, seconds, profile)
        threads0 = thread_cpu_seconds(proc.pid)
        started, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        pct = 100.0 * (cpu_seconds(proc.pid) - cpu0) / elapsed
        if profile is not None and spy is not None:
            shares = thread_shares(threads0, thread_cpu_seconds(proc.pid), elapsed)
            profile.with_suffix(".threads").write_text("".join(f"{p:6.2f} %  {name}\n" for name, p in shares))
            spy.wait()
        return pct
    finally:
        proc.send_signal(signal.SIGTERM)  # closes like Quit: hangs up and stops the local server
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(quick: bool = False, profile: Path | None = None) -> Figures:
    runs, seconds = (1, 8.0) if quick else (3, 15.0)
    synthesizer = Synthesizer()
    question = synthesizer.synthesize_blocking(QUESTION)
    synthesizer.close()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rig = PulseRig(tmp / "pulse")
        rig.start()
        try:
            samples = [one_window(rig, tmp / f"home{i}", question, seconds,
                                  None if profile is None else profile / f"app_cpu_{i}.txt") for i in range(runs)]
        finally:
            rig.stop()
    log.info("cpu %% per run: %s", samples)
    return {"cpu_pct": figure(samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.app_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 8 s window instead of three of 15 s")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each window; stacks and top functions in DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    print_table(run(args.quick, args.profile), sys.stdout)
    if args.profile is not None:
        for stacks in sorted(args.profile.glob("app_cpu_*.txt")):
            print(f"\n{stacks.name}: CPU per thread, % of one core")
            print(stacks.with_suffix(".threads").read_text(), end="")
            print_top(stacks, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
