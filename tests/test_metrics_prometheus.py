"""The receiver's /metrics as Prometheus itself sees it: `promtool check metrics` on a real
response after real posts, and one real scrape by a real Prometheus server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from _metrics_helpers import ReceiverProcess
from server.metrics.app import PATH

pytestmark = pytest.mark.timeout(90)

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
SCRAPE_DEADLINE_S = 45.0

BATCHES = [
    {"type": "realtime_latency", "sessionId": "desk-1", "metrics": {"count": 4, "avg": 300.0, "p95": 500.0, "p99": 800.0},
     "usage": {"input_tokens": 1200, "output_tokens": 340, "input_text_tokens": 200, "input_audio_tokens": 1000,
               "output_text_tokens": 40, "output_audio_tokens": 300, "cached_tokens": 64, "cost_usd": 0.0125}},
    {"type": "realtime_latency", "sessionId": "desk-2", "timestamp": 1_700_000_000_000,
     "metrics": {"count": 2, "avg": 150.0, "p95": 200.0, "p99": 1500.0}},  # the seed's shape, no usage
]


def _need(tool: str | None, name: str) -> str:
    if tool is None:
        # ./bootstrap.sh test installs it, so in CI a missing tool is a set-up failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"{name} is not installed (apt-get install -y prometheus; ./bootstrap.sh test does it)")
    assert tool is not None
    return tool


def _promtool(exposition: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_need(PROMTOOL, "promtool"), "check", "metrics"], input=exposition,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    proc = ReceiverProcess(tmp_path, "--db", str(tmp_path / "m.db")).start()
    yield proc
    assert proc.stop() == 0


@pytest.fixture
async def posted(receiver: ReceiverProcess) -> AsyncIterator[str]:
    """The receiver after the real posts: its /metrics text."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), trust_env=False) as http:
        for batch in BATCHES:
            async with http.post(receiver.url + PATH, json=batch) as response:
                assert response.status == 200, await response.text()
        async with http.get(receiver.url + "/metrics") as response:
            assert response.status == 200
            yield await response.text()


def test_promtool_refuses_abbreviated_units() -> None:
    """The check below can fail: promtool refuses what the receiver used to expose."""
    old = '# HELP sandra_latency_latest_ms x\n# TYPE sandra_latency_latest_ms gauge\nsandra_latency_latest_ms{stat="p99"} 480.0\n'
    result = _promtool(old)
    assert result.returncode != 0 and "abbreviated units" in result.stdout + result.stderr


async def test_promtool_accepts_the_exposition(posted: str) -> None:
    assert 'sandra_latency_latest_seconds{stat="p99"} 1.5' in posted.splitlines()
    assert 'sandra_tokens_total{kind="input"} 1200.0' in posted.splitlines()
    result = _promtool(posted)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # not even a warning


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _query(http: aiohttp.ClientSession, base: str, query: str) -> list[dict]:
    """The instant vector for `query`, or [] while Prometheus is starting or has not scraped yet."""
    try:
        async with http.get(base + "/api/v1/query", params={"query": query}) as response:
            if response.status != 200:
                return []
            answer = await response.json()
    except aiohttp.ClientError:
        return []
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


async def test_a_real_prometheus_scrapes_it(tmp_path: Path, receiver: ReceiverProcess, posted: str) -> None:
    prometheus = _need(PROMETHEUS, "prometheus")
    target = receiver.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    # JSON is YAML: one scrape job, every second, of the receiver alone.
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "sandra", "static_configs": [{"targets": [target]}]}],
    }))
    port = _free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SCRAPE_DEADLINE_S
        tokens: list[dict] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), trust_env=False) as http:
            while time.monotonic() < deadline and proc.poll() is None:
                tokens = await _query(http, base, 'sandra_tokens_total{kind="output_audio"}')
                if tokens:
                    break
                await asyncio.sleep(0.5)
            assert tokens, f"Prometheus never scraped the series in {SCRAPE_DEADLINE_S:g} s:\n{log_path.read_text()}"
            p99 = await _query(http, base, 'sandra_latency_latest_seconds{stat="p99"}')
            cost = await _query(http, base, "sandra_cost_usd_total")
            up = await _query(http, base, 'up{job="sandra"}')
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert float(tokens[0]["value"][1]) == 300
    assert tokens[0]["metric"]["instance"] == target
    assert float(p99[0]["value"][1]) == 1.5
    assert float(cost[0]["value"][1]) == pytest.approx(0.0125)
    assert float(up[0]["value"][1]) == 1
