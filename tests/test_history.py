"""BoundedHistory: count limit, byte budget, exact incremental size, copies, export/import."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core.history
from core.history import BoundedHistory


class FakeClock:
    """Ticks one second per reading, so every message has a distinct, known timestamp."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return self.now


def compact_len(value: object) -> int:
    """The definition of size, computed the slow, obvious way."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def reference(adds: list[tuple[str, str]], max_messages: int, max_bytes: int, trim_to: int) -> list[dict]:
    """The seed's algorithm (re-serialise on every add), plus 'keep dropping, never the newest'."""
    kept: list[dict] = []
    stamp = 1000.0
    for role, content in adds:
        stamp += 1
        kept.append({"role": role, "content": content, "timestamp": stamp})
        if len(kept) > max_messages:
            kept.pop(0)
        if compact_len(kept) > max_bytes:
            kept = kept[-trim_to:]
            while compact_len(kept) > max_bytes and len(kept) > 1:
                kept.pop(0)
    return kept


def test_51st_message_drops_the_first() -> None:
    history = BoundedHistory(clock=FakeClock())
    for i in range(51):
        history.add("user" if i % 2 == 0 else "assistant", f"message {i}")
    contents = [m["content"] for m in history.messages()]
    assert len(history) == 50
    assert contents[0] == "message 1"
    assert contents[-1] == "message 50"


def test_messages_have_role_content_timestamp_from_the_clock() -> None:
    history = BoundedHistory(clock=FakeClock(5000.0))
    history.add("user", "hello")
    history.add("system", "be brief")
    assert history.messages() == [
        {"role": "user", "content": "hello", "timestamp": 5001.0},
        {"role": "system", "content": "be brief", "timestamp": 5002.0},
    ]


def test_messages_are_copies() -> None:
    history = BoundedHistory(clock=FakeClock())
    history.add("user", "original")
    copy = history.messages()
    copy[0]["content"] = "changed"
    copy.append({"role": "user", "content": "extra", "timestamp": 0})
    assert history.messages()[0]["content"] == "original"
    assert len(history) == 1


@pytest.mark.parametrize("role", ["bot", "", "USER", None, ["user"]])
def test_unknown_role_is_refused(role: object) -> None:
    history = BoundedHistory()
    with pytest.raises(ValueError):
        history.add(role, "hi")  # type: ignore[arg-type]
    assert len(history) == 0


def test_content_must_be_text() -> None:
    with pytest.raises(TypeError):
        BoundedHistory().add("user", 42)  # type: ignore[arg-type]


def test_byte_budget_trims_to_the_newest_30() -> None:
    clock = FakeClock()
    one = compact_len({"role": "user", "content": "x" * 100, "timestamp": 1001.0})
    # 40 messages of this size make an array of 40*one + 39 commas + 2 brackets; one byte less is the budget.
    budget = 40 * one + 41 - 1
    history = BoundedHistory(max_bytes=budget, clock=clock)
    for i in range(39):
        history.add("user", f"{i:03d}" + "x" * 97)
    assert len(history) == 39
    history.add("user", "039" + "x" * 97)
    kept = [m["content"][:3] for m in history.messages()]
    assert kept == [f"{i:03d}" for i in range(10, 40)]
    assert history.total_bytes == 30 * one + 31


def test_keeps_dropping_past_trim_to_but_never_the_newest() -> None:
    history = BoundedHistory(max_bytes=10_000, clock=FakeClock())
    for i in range(5):
        history.add("assistant", f"{i}" + "y" * 2999)
    # Each message is ~3 KB: only three fit in 10,000 bytes, fewer than trim_to (30).
    assert [m["content"][0] for m in history.messages()] == ["2", "3", "4"]
    assert history.total_bytes <= 10_000
    history.add("user", "z" * 50_000)
    assert [m["content"][0] for m in history.messages()] == ["z"]
    assert history.total_bytes > 10_000  # the newest message stays even when it alone is over


def test_total_bytes_is_the_exact_json_length_with_non_ascii() -> None:
    history = BoundedHistory(clock=FakeClock())
    assert history.total_bytes == len(b"[]")
    for text in ["plain", "héllo wörld", "語音助手", "emoji 🎙️", 'quote " and \\ backslash', "\ud800 stray"]:
        history.add("user", text)
        assert history.total_bytes == compact_len(history.messages())
        assert history.total_bytes == len(history.to_json().encode("utf-8", "surrogatepass"))


def test_an_add_serialises_only_its_own_message(monkeypatch: pytest.MonkeyPatch) -> None:
    serialised: list[int] = []
    real = core.history._json

    def counting(value: object) -> str:
        text = real(value)
        serialised.append(len(text))
        return text

    monkeypatch.setattr(core.history, "_json", counting)
    history = BoundedHistory(clock=FakeClock())
    for i in range(200):
        history.add("user", "w" * 1000)
    # One serialisation per add, each about one message long: never the whole list.
    assert len(serialised) == 200
    assert max(serialised) < 1100


@settings(max_examples=200, deadline=None)
@given(
    adds=st.lists(
        st.tuples(st.sampled_from(["user", "assistant", "system"]), st.text(max_size=120)), max_size=60
    ),
    max_messages=st.integers(1, 12),
    max_bytes=st.integers(1, 2000),
    trim_fraction=st.floats(0.0, 1.0),
)
def test_matches_the_slow_reference(
    adds: list[tuple[str, str]], max_messages: int, max_bytes: int, trim_fraction: float
) -> None:
    trim_to = max(1, round(max_messages * trim_fraction))
    history = BoundedHistory(max_messages, max_bytes, trim_to, clock=FakeClock())
    for role, content in adds:
        history.add(role, content)
    expected = reference(adds, max_messages, max_bytes, trim_to)
    assert history.messages() == expected
    assert history.total_bytes == compact_len(expected)


def test_json_round_trip_keeps_timestamps() -> None:
    history = BoundedHistory(clock=FakeClock())
    history.add("user", "what time is it")
    history.add("assistant", "It is noon. ¿Algo más?")
    restored = BoundedHistory.from_json(history.to_json(), clock=FakeClock(0.0))
    assert restored.messages() == history.messages()
    assert restored.total_bytes == history.total_bytes


def test_from_json_applies_the_limits() -> None:
    history = BoundedHistory(clock=FakeClock())
    for i in range(20):
        history.add("user", str(i))
    restored = BoundedHistory.from_json(history.to_json(), max_messages=5, trim_to=3)
    assert [m["content"] for m in restored.messages()] == ["15", "16", "17", "18", "19"]


def test_clear_empties_and_resets_size() -> None:
    history = BoundedHistory(clock=FakeClock())
    history.add("user", "hi")
    history.clear()
    assert len(history) == 0 and history.messages() == [] and history.total_bytes == 2


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ('{"role": "user"}', "must be a list"),
        ('["hello"]', "message 0 is not an object"),
        ('[{"role": "user", "content": "a"}]', "lacks timestamp"),
        ('[{"role": "robot", "content": "a", "timestamp": 1}]', "role must be one of"),
        ('[{"role": "user", "content": 5, "timestamp": 1}]', "content must be text"),
        ('[{"role": "user", "content": "a", "timestamp": NaN}]', "finite number"),
        ('[{"role": "user", "content": "a", "timestamp": true}]', "finite number"),
    ],
)
def test_from_json_refuses_bad_input_clearly(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        BoundedHistory.from_json(text)


@pytest.mark.parametrize(
    "kwargs", [{"max_messages": 0}, {"max_bytes": 0}, {"trim_to": 0}, {"max_messages": 10, "trim_to": 11}]
)
def test_bad_limits_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BoundedHistory(**kwargs)
