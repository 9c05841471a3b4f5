"""The metrics receiver: the real `main.py metrics-server` process over loopback HTTP,
plus its pure parts (payload validator, rate limiter) checked directly."""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _metrics_helpers import ReceiverProcess, run_receiver
from server.metrics.app import MAX_BODY, PATH
from server.metrics.batch import InvalidBatch, parse_batch
from server.metrics.rate_limit import RateLimiter
from server.metrics.selftest import selftest_check

pytestmark = pytest.mark.timeout(60)

ORIGIN = "https://app.example.org"


def valid(**metrics: float) -> dict:
    return {"type": "realtime_latency", "sessionId": "desk-1", "timestamp": 1_700_000_000_000,
            "metrics": {"count": 10, "avg": 250.0, "p95": 450.0, "p99": 650.0, **metrics}}


USAGE = {"input_tokens": 1200, "output_tokens": 340, "input_text_tokens": 200, "input_audio_tokens": 1000,
         "output_text_tokens": 40, "output_audio_tokens": 300, "cached_tokens": 64, "cost_usd": 0.0125}


def with_usage(**usage: object) -> dict:
    return valid() | {"usage": USAGE | usage}


def sample(text: str, name: str) -> float:
    """One sample's value from Prometheus text, by its full name with labels."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics:\n{text}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    """One receiver for the refusal cases (they store nothing); no rate limit so they never collide with it."""
    home = tmp_path_factory.mktemp("receiver-home")
    proc = ReceiverProcess(home, "--db", str(home / "m.db"), "--allow-origin", ORIGIN, "--rate-limit", "0").start()
    yield proc
    assert proc.stop() == 0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), trust_env=False) as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: object, **kw: object) -> tuple[int, dict]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with http.post(url + PATH, data=data, headers={"Content-Type": "application/json"}, **kw) as response:
        return response.status, await response.json(content_type=None)


async def metrics_text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


# --- the real process ---------------------------------------------------------------------------------------


async def test_valid_post_is_stored_and_counted(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    receiver = ReceiverProcess(tmp_path, "--db", str(tmp_path / "m.db")).start()
    try:
        assert "127.0.0.1" in receiver.first_line and str(tmp_path / "m.db") in receiver.first_line
        assert await post(http, receiver.url, valid()) == (200, {"success": True, "metricsReceived": True})
        assert await post(http, receiver.url, valid(avg=300.0, p95=900.0, p99=1500.0)) == (
            200, {"success": True, "metricsReceived": True})
        no_timestamp = valid(p99=700.0)
        del no_timestamp["timestamp"]  # the seed's client never sent one
        assert (await post(http, receiver.url, no_timestamp))[0] == 200
        text = await metrics_text(http, receiver.url)
    finally:
        assert receiver.stop() == 0
    assert sample(text, "sandra_metrics_batches_total") == 3
    assert sample(text, 'sandra_latency_latest_seconds{stat="p99"}') == 0.7
    assert sample(text, 'sandra_latency_latest_seconds{stat="avg"}') == 0.25
    assert sample(text, 'sandra_latency_reported_seconds_count{stat="p99"}') == 3
    assert sample(text, 'sandra_latency_reported_seconds_sum{stat="p99"}') == pytest.approx(0.65 + 1.5 + 0.7)
    assert sample(text, 'sandra_latency_reported_seconds_bucket{le="1.0",stat="p99"}') == 2
    assert sample(text, "sandra_metrics_high_p99_batches_total") == 1
    assert "desk-1" not in text  # no label per session
    assert "high latency" in receiver.stderr() and "p99=1500 ms" in receiver.stderr()
    db = sqlite3.connect(tmp_path / "m.db")
    rows = db.execute("SELECT session_id, count, avg, p95, p99, client_timestamp FROM batches ORDER BY id").fetchall()
    db.close()
    assert rows == [("desk-1", 10, 250.0, 450.0, 650.0, 1.7e12), ("desk-1", 10, 300.0, 900.0, 1500.0, 1.7e12),
                    ("desk-1", 10, 250.0, 450.0, 700.0, None)]


async def test_everything_survives_a_restart(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    db = str(tmp_path / "m.db")
    first = ReceiverProcess(tmp_path, "--db", db).start()
    try:
        for p99 in (500.0, 800.0):
            assert (await post(http, first.url, valid(p99=p99)))[0] == 200
    finally:
        assert first.stop(signal.SIGINT) == 0
    second = ReceiverProcess(tmp_path, "--db", db).start()
    try:
        rebuilt = await metrics_text(http, second.url)
        assert (await post(http, second.url, valid(p99=2000.0)))[0] == 200
        after = await metrics_text(http, second.url)
    finally:
        assert second.stop() == 0
    assert sample(rebuilt, "sandra_metrics_batches_total") == 2
    assert sample(rebuilt, 'sandra_latency_latest_seconds{stat="p99"}') == 0.8
    assert sample(rebuilt, 'sandra_latency_reported_seconds_sum{stat="p99"}') == pytest.approx(1.3)
    assert sample(after, "sandra_metrics_batches_total") == 3
    assert sample(after, "sandra_metrics_high_p99_batches_total") == 1


def tokens(text: str) -> dict[str, float]:
    return {kind: sample(text, f'sandra_tokens_total{{kind="{kind}"}}')
            for kind in ("input", "output", "input_text", "input_audio", "output_text", "output_audio", "cached")}


async def test_usage_is_stored_counted_and_survives_a_restart(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    db = str(tmp_path / "m.db")
    first = ReceiverProcess(tmp_path, "--db", db).start()
    try:
        before = await metrics_text(http, first.url)
        assert (await post(http, first.url, with_usage()))[0] == 200
        no_cost = with_usage(input_tokens=10, cached_tokens=0)
        del no_cost["usage"]["cost_usd"]
        assert (await post(http, first.url, no_cost))[0] == 200
        only_some = valid() | {"usage": {"output_tokens": 5, "total_tokens": 99}}  # others 0; unknown keys ignored
        assert (await post(http, first.url, only_some))[0] == 200
        assert (await post(http, first.url, valid() | {"usage": None}))[0] == 200  # the seed's shape
        text = await metrics_text(http, first.url)
    finally:
        assert first.stop() == 0
    second = ReceiverProcess(tmp_path, "--db", db).start()
    try:
        rebuilt = await metrics_text(http, second.url)
    finally:
        assert second.stop() == 0
    # Every kind is there at 0 before any usage arrives, so rate() works from the start.
    assert set(tokens(before).values()) == {0.0} and sample(before, "sandra_cost_usd_total") == 0
    expected = {"input": 1210, "output": 685, "input_text": 400, "input_audio": 2000, "output_text": 80,
                "output_audio": 600, "cached": 64}
    assert tokens(text) == expected and tokens(rebuilt) == expected
    assert sample(text, "sandra_cost_usd_total") == sample(rebuilt, "sandra_cost_usd_total") == pytest.approx(0.0125)
    assert sample(rebuilt, "sandra_metrics_batches_total") == 4
    con = sqlite3.connect(db)
    rows = con.execute("SELECT input_tokens, output_tokens, cached_tokens, cost_usd FROM batches ORDER BY id").fetchall()
    con.close()
    assert rows == [(1200, 340, 64, 0.0125), (10, 340, 0, None), (0, 5, 0, None), (None, None, None, None)]


async def test_a_database_from_before_usage_is_upgraded(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    db = tmp_path / "m.db"
    con = sqlite3.connect(db)  # the schema the receiver wrote before batches carried usage
    con.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY, received_at REAL NOT NULL, session_id TEXT NOT NULL,"
                " client_timestamp REAL, count INTEGER NOT NULL, avg REAL NOT NULL, p95 REAL NOT NULL, p99 REAL NOT NULL)")
    con.execute("INSERT INTO batches (received_at, session_id, client_timestamp, count, avg, p95, p99)"
                " VALUES (1.7e9, 'old', NULL, 3, 100.0, 200.0, 300.0)")
    con.commit()
    con.close()
    receiver = ReceiverProcess(tmp_path, "--db", str(db)).start()
    try:
        rebuilt = await metrics_text(http, receiver.url)
        assert (await post(http, receiver.url, with_usage()))[0] == 200
        after = await metrics_text(http, receiver.url)
    finally:
        assert receiver.stop() == 0
    assert sample(rebuilt, "sandra_metrics_batches_total") == 1
    assert sample(rebuilt, 'sandra_latency_latest_seconds{stat="p99"}') == 0.3
    assert tokens(after)["input"] == 1200 and sample(after, "sandra_metrics_batches_total") == 2
    assert not list(tmp_path.glob("m.db.corrupt-*"))  # upgraded in place, not set aside
    con = sqlite3.connect(db)
    rows = con.execute("SELECT session_id, input_tokens, cost_usd FROM batches ORDER BY id").fetchall()
    con.close()
    assert rows == [("old", None, None), ("desk-1", 1200, 0.0125)]


async def test_default_database_is_in_the_user_data_dir(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    receiver = ReceiverProcess(tmp_path).start()
    try:
        assert (await post(http, receiver.url, valid()))[0] == 200
    finally:
        assert receiver.stop() == 0
    assert (tmp_path / ".local/share/sandra/metrics.sqlite3").is_file()


async def test_corrupt_database_is_set_aside(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    db = tmp_path / "m.db"
    db.write_bytes(b"this is not a database" * 100)
    receiver = ReceiverProcess(tmp_path, "--db", str(db)).start()
    try:
        assert (await post(http, receiver.url, valid()))[0] == 200
    finally:
        assert receiver.stop() == 0
    assert len(list(tmp_path.glob("m.db.corrupt-*"))) == 1
    assert "unreadable" in receiver.stderr()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_get_405(shared: ReceiverProcess, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, shared.url + PATH) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST, OPTIONS"


async def test_preflight_for_an_allowed_origin(shared: ReceiverProcess, http: aiohttp.ClientSession) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with http.options(shared.url + PATH, headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]
    async with http.post(shared.url + PATH, json=valid(), headers={"Origin": ORIGIN}) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "https://app.example.org.evil.example", None])
async def test_preflight_for_a_refused_origin(shared: ReceiverProcess, http: aiohttp.ClientSession,
                                              origin: str | None) -> None:
    headers = {"Access-Control-Request-Method": "POST"} | ({"Origin": origin} if origin else {})
    async with http.options(shared.url + PATH, headers=headers) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    if origin:
        # A page on that origin cannot post blind either (a text/plain POST needs no preflight).
        async with http.post(shared.url + PATH, data=json.dumps(valid()), headers={"Origin": origin}) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


def without(key: str, inner: bool = False) -> dict:
    body = valid()
    del (body["metrics"] if inner else body)[key]
    return body


BAD_BODIES: list[tuple[str, object, str]] = [
    ("not json", b"{not json", "body"),
    ("invalid utf-8", b'{"type": "\xff\xfe"}', "body"),
    ("deep nesting", b"[" * 50_000, "body"),
    ("a list", [valid()], "body"),
    ("type missing", without("type"), "type"),
    ("type wrong", valid() | {"type": "other"}, "type"),
    ("sessionId missing", without("sessionId"), "sessionId"),
    ("sessionId a number", valid() | {"sessionId": 5}, "sessionId"),
    ("sessionId empty", valid() | {"sessionId": ""}, "sessionId"),
    ("sessionId too long", valid() | {"sessionId": "s" * 129}, "sessionId"),
    ("sessionId with a newline", valid() | {"sessionId": "a\nWARNING forged"}, "sessionId"),
    ("timestamp text", valid() | {"timestamp": "now"}, "timestamp"),
    ("timestamp negative", valid() | {"timestamp": -1}, "timestamp"),
    ("metrics missing", without("metrics"), "metrics"),
    ("metrics a list", valid() | {"metrics": [1, 2]}, "metrics"),
    ("count missing", without("count", inner=True), "metrics.count"),
    ("count zero", valid(count=0), "metrics.count"),
    ("count fractional", valid(count=2.5), "metrics.count"),
    ("count boolean", valid(count=True), "metrics.count"),
    ("avg missing", without("avg", inner=True), "metrics.avg"),
    ("avg text", valid(avg="fast"), "metrics.avg"),
    ("p95 negative", valid(p95=-1.0), "metrics.p95"),
    ("p99 NaN", json.dumps(valid(p99=math.nan)).encode(), "metrics.p99"),
    ("p99 infinite", json.dumps(valid(p99=math.inf)).encode(), "metrics.p99"),
    ("p99 absurd", valid(p99=1e9), "metrics.p99"),
    ("p99 huge integer", valid(p99=10**400), "metrics.p99"),
    ("p99 below p95", valid(p95=500.0, p99=400.0), "metrics.p99"),
    ("usage a list", valid() | {"usage": [1, 2]}, "usage"),
    ("usage a number", valid() | {"usage": 5}, "usage"),
    ("input_tokens negative", with_usage(input_tokens=-1), "usage.input_tokens"),
    ("output_tokens fractional", with_usage(output_tokens=2.5), "usage.output_tokens"),
    ("cached_tokens a float", with_usage(cached_tokens=3.0), "usage.cached_tokens"),
    ("input_audio_tokens boolean", with_usage(input_audio_tokens=True), "usage.input_audio_tokens"),
    ("output_text_tokens text", with_usage(output_text_tokens="12"), "usage.output_text_tokens"),
    ("input_text_tokens huge", with_usage(input_text_tokens=10**400), "usage.input_text_tokens"),
    ("output_audio_tokens null", with_usage(output_audio_tokens=None), "usage.output_audio_tokens"),
    ("cost_usd negative", with_usage(cost_usd=-0.01), "usage.cost_usd"),
    ("cost_usd text", with_usage(cost_usd="0.01"), "usage.cost_usd"),
    ("cost_usd NaN", json.dumps(with_usage(cost_usd=math.nan)).encode(), "usage.cost_usd"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_BODIES, ids=[case for case, _, _ in BAD_BODIES])
async def test_bad_input_gets_400_naming_the_field(shared: ReceiverProcess, http: aiohttp.ClientSession,
                                                   case: str, body: object, field: str) -> None:
    status, answer = await post(http, shared.url, body)
    assert status == 400, answer
    assert answer["success"] is False and answer["field"] == field
    assert field in answer["error"]


async def test_body_size_limit(shared: ReceiverProcess, http: aiohttp.ClientSession) -> None:
    exact = json.dumps(valid()).encode()
    exact += b" " * (MAX_BODY - len(exact))  # whitespace is valid JSON padding: exactly at the limit
    assert (await post(http, shared.url, exact))[0] == 200
    status, answer = await post(http, shared.url, exact + b" ")
    assert status == 413 and answer["field"] == "body"

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length (chunked): only the streaming cap can stop it, after ~70 KB of a 10 MB body.
        yield exact[:-1]
        for _ in range(10 * 1024):
            yield b" " * 1024

    async with http.post(shared.url + PATH, data=chunks()) as response:
        assert response.status == 413
    # The receiver is still fine afterwards.
    assert (await post(http, shared.url, valid()))[0] == 200


async def test_rate_limit_answers_429(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    receiver = ReceiverProcess(tmp_path, "--db", str(tmp_path / "m.db"), "--rate-limit", "1").start()
    try:
        statuses = []
        for _ in range(4):
            async with http.post(receiver.url + PATH, json=valid()) as response:
                statuses.append(response.status)
                retry_after = response.headers.get("Retry-After")
        text = await metrics_text(http, receiver.url)
    finally:
        assert receiver.stop() == 0
    # A burst of 2 (twice the rate) goes through, then the bucket is empty.
    assert statuses[:2] == [200, 200] and statuses[-1] == 429
    assert retry_after is not None and int(retry_after) >= 1
    assert sample(text, 'sandra_metrics_rejected_total{reason="rate_limited"}') >= 1
    assert sample(text, "sandra_metrics_batches_total") == statuses.count(200)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "192.0.2.1"], "--allow-remote"),
        (["--allow-origin", "*"], "no wildcard"),
        (["--allow-origin", "https://a.example/path"], "no wildcard, no path"),
        (["--port", "70000"], "0 to 65535"),
        (["--rate-limit", "-1"], "--rate-limit"),
    ],
)
def test_bad_arguments_are_refused_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_receiver(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_port_in_use_is_a_clear_error(tmp_path: Path, shared: ReceiverProcess) -> None:
    port = shared.url.rsplit(":", 1)[1]
    result = run_receiver(tmp_path, "--port", port, "--db", str(tmp_path / "m.db"))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_selftest_check_round_trip() -> None:
    detail = selftest_check()
    assert "127.0.0.1" in detail and "p99 480 ms" in detail


# --- the pure parts -----------------------------------------------------------------------------------------


def test_rate_limiter_with_a_fake_clock() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # each client has its own bucket
    now[0] = 0.5  # one token back at 2/s
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    now[0] = 100.0  # refills to the burst, not beyond
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0


def test_rate_limiter_off_and_bounded() -> None:
    assert all(RateLimiter(rate=0, burst=1).acquire("a") == 0.0 for _ in range(1000))
    limiter = RateLimiter(rate=1.0, burst=1.0, clock=lambda: 0.0, max_clients=3)
    for client in "abcd":
        limiter.acquire(client)
    assert len(limiter._buckets) == 3
    assert limiter.acquire("d") > 0  # the newest are remembered
    assert limiter.acquire("a") == 0.0  # the oldest was forgotten and comes back full


latencies = st.floats(0, 3_600_000, allow_nan=False)
TOKEN_FIELDS = [key for key in USAGE if key.endswith("_tokens")]
usages = st.fixed_dictionaries({}, optional={key: st.integers(0, 10**12) for key in TOKEN_FIELDS}
                               | {"cost_usd": st.none() | st.floats(0, 1e6, allow_nan=False)})


@st.composite
def valid_payloads(draw: st.DrawFn) -> dict:
    p95 = draw(latencies)
    return {
        "type": "realtime_latency",
        "sessionId": draw(st.text(st.characters(blacklist_categories=("C", "Z")), min_size=1, max_size=128)),
        "timestamp": draw(st.none() | st.integers(0, 10**14)),
        "metrics": {"count": draw(st.integers(1, 10**9)), "avg": draw(latencies), "p95": p95,
                    "p99": draw(st.floats(p95, 3_600_000, allow_nan=False))},
        **draw(st.dictionaries(st.sampled_from(["extra", "version"]), st.integers(), max_size=2)),
        **draw(st.dictionaries(st.just("usage"), st.none() | usages, max_size=1)),
    }


@settings(max_examples=300, deadline=None)
@given(valid_payloads())
def test_validator_accepts_every_valid_payload(payload: dict) -> None:
    batch = parse_batch(json.loads(json.dumps(payload)))
    assert batch.session_id == payload["sessionId"]
    assert (batch.count, batch.avg, batch.p95, batch.p99) == tuple(payload["metrics"][k] for k in ("count", "avg", "p95", "p99"))
    usage = payload.get("usage")
    if usage is None:
        assert batch.usage is None
    else:
        assert batch.usage is not None
        assert [getattr(batch.usage, key) for key in TOKEN_FIELDS] == [usage.get(key, 0) for key in TOKEN_FIELDS]
        assert batch.usage.cost_usd == usage.get("cost_usd")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(valid_payloads(), st.sampled_from(["type", "sessionId", "timestamp", "metrics", "metrics.count",
                                          "metrics.avg", "metrics.p95", "metrics.p99"]), json_values)
def test_validator_names_a_broken_field_or_accepts_a_harmless_change(payload: dict, field: str, value: object) -> None:
    outer, _, inner = field.partition(".")
    (payload["metrics"] if inner else payload)[inner or outer] = value
    try:
        parse_batch(payload)
    except InvalidBatch as exc:
        # The field itself, a field inside it, or p99 (a changed p95 can make p99 the inconsistent one).
        assert exc.field == "metrics.p99" or exc.field == field or exc.field.startswith(field + ".")
    else:
        # Accepted: then the new value is one the wire format allows there (a number, text, or no timestamp).
        allowed_null = field == "timestamp" and value is None
        assert allowed_null or (isinstance(value, (int, float, str)) and not isinstance(value, bool))


@settings(max_examples=300, deadline=None)
@given(valid_payloads(), usages, st.sampled_from(["usage", *TOKEN_FIELDS, "cost_usd"]), json_values)
def test_validator_names_a_broken_usage_field_or_accepts_a_harmless_change(payload: dict, usage: dict, key: str,
                                                                           value: object) -> None:
    if key == "usage":
        payload["usage"] = value
    else:
        payload["usage"] = usage | {key: value}
    field = key if key == "usage" else f"usage.{key}"
    try:
        parse_batch(payload)
    except InvalidBatch as exc:
        assert exc.field == field or exc.field.startswith(field + ".")
    else:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key == "usage":
            assert value is None or isinstance(value, dict)
        elif key == "cost_usd":
            assert value is None or (number and 0 <= value <= 1e6)
        else:
            assert isinstance(value, int) and number and 0 <= value <= 10**12


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_validator_never_raises_anything_else(value: object) -> None:
    with pytest.raises(InvalidBatch):
        parse_batch(value)


async def test_a_flood_of_slow_batches_does_not_flood_the_log(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    receiver = ReceiverProcess(tmp_path, "--db", str(tmp_path / "m.db"), "--rate-limit", "0").start()
    try:
        statuses = await asyncio.gather(*(post(http, receiver.url, valid(p99=5000.0)) for _ in range(60)))
        text = await metrics_text(http, receiver.url)
    finally:
        assert receiver.stop() == 0
    assert [status for status, _ in statuses] == [200] * 60
    assert sample(text, "sandra_metrics_high_p99_batches_total") == 60  # every one counted
    warnings = receiver.stderr().count("high latency")
    assert 1 <= warnings < 20  # but only a few written


def test_allow_remote_warns_before_listening_beyond_loopback(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails, so nothing ever listens off loopback.
    result = run_receiver(tmp_path, "--host", "192.0.2.1", "--allow-remote", "--port", "0",
                          "--db", str(tmp_path / "m.db"))
    assert "WARNING: listening on 192.0.2.1" in result.stderr
    assert result.returncode == 1 and "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
