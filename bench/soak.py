"""Memory over an accelerated long call: soak_rss_growth_mb.

Thousands of turns go through the engine's own event handling (the same handler the
data channel calls, with the server events of a real turn: transcription, transcript
deltas and done, output audio started and stopped, and the response_latency
measurement the playout stage triggers) and from there, through the engine's
observers, into the window's conversation view and live latency plot, offscreen, with
Qt's events processed as the app's loop would. The figure is the process's resident
memory growth from the end of a warm-up to the end of the run.

    python -m bench.soak [--quick]
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported: there is no display

from bench.figures import Figures, cli, figure  # noqa: E402
from base.pcm import SILENCE
from core.audio import FileAudio, write_wav  # noqa: E402
from core.config import Settings  # noqa: E402
from core.call.engine import CallEngine, EngineOptions  # noqa: E402
from gui.app import application, build_window  # noqa: E402

log = logging.getLogger(__name__)

QT_EVENTS_EVERY = 10  # turns between passes of Qt's event loop (repaints, deferred deletes)


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _turn_events(i: int, rng: random.Random) -> list[dict]:
    """The server events of one answered turn, as the local server sends them."""
    response = f"resp_{i}"
    answer = ["It is ", f"{rng.randint(1, 12)} o'clock", f" and {rng.randint(0, 59)} minutes."]
    events: list[dict] = [{"type": "conversation.item.input_audio_transcription.completed", "item_id": f"item_{i}",
                           "content_index": 0, "transcript": f"what time is it, question {i}"}]
    events += [{"type": "response.output_audio_transcript.delta", "response_id": response, "delta": part}
               for part in answer]
    events += [{"type": "response.output_audio_transcript.done", "response_id": response, "transcript": "".join(answer)},
               {"type": "output_audio_buffer.started", "response_id": response},
               {"type": "output_audio_buffer.stopped", "response_id": response}]
    return events


def one_run(turns: int, warmup: int, tmp: Path) -> float:
    """RSS growth (MB) over `turns` turns after `warmup` turns, in a fresh window and engine."""
    app = application()
    write_wav(tmp / "silence.wav", SILENCE)
    engine = CallEngine(Settings(), audio=FileAudio(tmp / "silence.wav"), options=EngineOptions(save_transcript=False))
    window = build_window(Settings(), engine=engine)
    window.show()
    window.install_latency_plot()
    rng = random.Random(7)
    baseline = 0.0
    started = time.monotonic()
    for i in range(warmup + turns):
        if i == warmup:
            app.processEvents()
            baseline = rss_mb()
        for event in _turn_events(i, rng):
            engine._on_message(json.dumps(event))
        engine._record("response_latency", rng.uniform(150.0, 400.0))
        if i % QT_EVENTS_EVERY == 0:
            app.processEvents()
    app.processEvents()
    growth = rss_mb() - baseline
    log.info("%d turns in %.1f s, RSS %.1f -> %.1f MB", warmup + turns, time.monotonic() - started, baseline,
             baseline + growth)
    window.allow_close()
    window.close()
    window.deleteLater()
    app.processEvents()
    return growth


def run(quick: bool = False) -> Figures:
    turns, warmup, runs = (1000, 300, 1) if quick else (2000, 500, 3)
    with tempfile.TemporaryDirectory() as tmp:
        return {"soak_rss_growth_mb": figure(one_run(turns, warmup, Path(tmp)) for _ in range(runs))}


def main(argv: list[str] | None = None) -> int:
    return cli("python -m bench.soak", __doc__ or "", run, "1,000 turns instead of 2,000", argv, log)


if __name__ == "__main__":
    sys.exit(main())
