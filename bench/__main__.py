"""Every benchmark, several runs each: `python -m bench [--json] [--write [FILE]] [--quick] [--chaos] [--only a,b]`.

Each benchmark runs in its own child process (`python -m bench --child NAME`), so one
cannot skew another: the soak's memory, the PulseAudio rig's environment, Qt and the
loopback-only ICE patch stay inside their child. The table gives median, min and max
per figure with its target; with --json the last stdout line is one JSON object with
every figure, the plain-aiortc baselines measured in the same run among them. --write
replaces the figures table in BENCHMARKS.md (bench/report.py), stamped with the commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.figures import Figures, print_table
from bench.report import MarkersMissing, Target, replace_table, stamp_now, write

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    # How the harness calls the module's run(); the default is run(quick).
    call: Callable[[object, bool], Figures] = lambda module, quick: module.run(quick)  # type: ignore[attr-defined]


BENCHMARKS = (
    Benchmark("history", "bench.history"),
    Benchmark("startup", "bench.startup"),
    Benchmark("engine_echo", "bench.engine_echo"),
    Benchmark("device_echo", "bench.device_echo"),
    # Only the plain-aiortc side: the app's own echo figures come from engine_echo.
    Benchmark("plain_aiortc", "bench.audio_latency",
              lambda module, quick: module.run(quick, adaptive_too=False)),  # type: ignore[attr-defined]
    Benchmark("response_latency", "bench.response_latency"),
    Benchmark("recovery", "bench.recovery"),
    Benchmark("liveness", "bench.liveness"),
    Benchmark("hands_free", "bench.hands_free"),
    Benchmark("app_cpu", "bench.app_cpu"),
    Benchmark("soak", "bench.soak"),
    Benchmark("speech", "bench.speech"),
)
CHAOS = Benchmark("chaos", "bench.chaos")  # only with --chaos, and only where it exists

# Issue #16's targets (and #15's after them), in the order the table lists them.
TARGETS = {
    "echo_rtt_ms": Target(35),
    "device_echo_rtt_ms": Target(60, relative_to="echo_rtt_ms"),
    "jitter_echo_rtt_ms": Target(100),
    "jitter_gap_pct": Target(1),
    "response_latency_ms": Target(200),
    "reconnect_ms": Target(2500),
    "dead_peer_detect_ms_streaming_server": Target(3000),
    "dead_peer_detect_ms_quiet_server": Target(3000),
    "stall_false_reconnects": Target(0, exact=True),
    "cpu_pct": Target(12),
    "soak_rss_growth_mb": Target(10),
    "startup_ms": Target(1000),
    # Issue #15's: hands-free over the rig's acoustic echo.
    "aec_erle_db": Target(25, at_least=True),
    "self_interruptions": Target(0, exact=True),
    "voice_barge_in_ms": Target(300),
    "answer_self_cuts": Target(0, exact=True),
}
CHILD_TIMEOUT_S = 600  # the slowest full benchmark takes about three minutes here


def _child(name: str, quick: bool) -> int:
    """Run one benchmark in this process; its figures are the last stdout line."""
    bench = next(b for b in (*BENCHMARKS, CHAOS) if b.name == name)
    figures = bench.call(importlib.import_module(bench.module), quick)
    print(json.dumps(figures), flush=True)
    return 0


def run_one(bench: Benchmark, quick: bool) -> Figures:
    command = [sys.executable, "-m", "bench", "--child", bench.name] + (["--quick"] if quick else [])
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"benchmark {bench.name} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    figures: Figures = json.loads(done.stdout.strip().splitlines()[-1])
    log.info("%s: %d figures in %.0f s", bench.name, len(figures), time.monotonic() - started)
    return figures


def _selected(only: str | None, chaos: bool) -> list[Benchmark]:
    chosen = list(BENCHMARKS)
    if chaos:
        if importlib.util.find_spec(CHAOS.module) is None:
            log.warning("--chaos: %s does not exist here; skipped", CHAOS.module)
        else:
            chosen.append(CHAOS)
    if only:
        names = set(only.split(","))
        unknown = names - {b.name for b in (*BENCHMARKS, CHAOS)}
        if unknown:
            raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        chosen = [b for b in (*BENCHMARKS, CHAOS) if b.name in names]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="last stdout line: every figure as one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (a few minutes)")
    parser.add_argument("--chaos", action="store_true", help="add bench.chaos (kill/restart cycles)")
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(b.name for b in BENCHMARKS))
    parser.add_argument("--write", nargs="?", type=Path, const=ROOT / "BENCHMARKS.md", metavar="FILE",
                        help="replace the figures table in FILE (default BENCHMARKS.md) with this run's")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.child:
        return _child(args.child, args.quick)
    figures: Figures = {}
    started = time.monotonic()
    stamp = None
    if args.write is not None:
        try:  # no file or no markers: refuse now, not after a 12-minute run
            replace_table(args.write.read_text(), "")
        except (OSError, MarkersMissing) as exc:
            raise SystemExit(f"--write {args.write}: {exc}") from exc
        stamp = stamp_now(ROOT)  # the code as it was when the run began
    for bench in _selected(args.only, args.chaos):
        figures.update(run_one(bench, args.quick))
    if args.quick and (args.only is None or "recovery" in args.only.split(",")):
        print("note: --quick skips dead_peer_detect_ms_streaming_server_plain_aiortc (aiortc alone needs ~30 s to notice)")
    print_table(figures, sys.stdout, {name: target.text() for name, target in TARGETS.items()})
    elapsed = time.monotonic() - started
    print(f"{len(figures)} figures in {elapsed:.0f} s")
    if stamp is not None:
        how = " ".join(["python -m bench", *(["--quick"] if args.quick else []),
                        *([f"--only {args.only}"] if args.only else []), *(["--chaos"] if args.chaos else [])])
        write(args.write, figures, TARGETS, dataclasses.replace(stamp, note=f"`{how}`, {elapsed:.0f} s."))
    missing = [name for name, f in figures.items() if not all(math.isfinite(f[k]) for k in ("value", "min", "max"))]
    if missing:
        log.warning("figures that are not finite numbers: %s", ", ".join(missing))
    if args.json:
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
