"""Ephemeral key store: TTL bounds, expiry on an injected clock, bounded size."""

from __future__ import annotations

import pytest

from server.realtime.keys import EphemeralKeyStore
from server.realtime.session import SessionConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_lives_exactly_its_ttl() -> None:
    clock = Clock()
    store = EphemeralKeyStore(clock)
    session = SessionConfig(instructions="hi")
    key = store.issue(60, session)
    assert key.value.startswith("ek_") and key.expires_at == clock.now + 60
    clock.now += 59.9
    found = store.lookup(key.value)
    assert found is not None and found.session is session
    clock.now += 0.1
    assert store.lookup(key.value) is None
    assert len(store) == 0


def test_keys_are_distinct_and_unknown_ones_fail() -> None:
    store = EphemeralKeyStore(Clock())
    values = {store.issue(600, SessionConfig()).value for _ in range(100)}
    assert len(values) == 100
    assert store.lookup("ek_nope") is None and store.lookup("") is None


@pytest.mark.parametrize("ttl", [9, 7201, 0, -5])
def test_ttl_out_of_range_is_refused(ttl: int) -> None:
    with pytest.raises(ValueError):
        EphemeralKeyStore(Clock()).issue(ttl, SessionConfig())


def test_expired_keys_are_purged_and_the_store_is_bounded() -> None:
    clock = Clock()
    store = EphemeralKeyStore(clock, max_live=5)
    first = [store.issue(10, SessionConfig()) for _ in range(3)]
    clock.now += 11
    assert len(store) == 0
    keys = [store.issue(600 + i, SessionConfig()) for i in range(7)]
    assert len(store) == 5
    # The two closest to expiry made room; the newest are all there.
    assert all(store.lookup(k.value) is None for k in keys[:2] + first)
    assert all(store.lookup(k.value) is not None for k in keys[2:])
