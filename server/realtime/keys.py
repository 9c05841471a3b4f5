"""Ephemeral keys (ek_…): issued against the server key, each good for one TTL.

Pure and clock-injected, so expiry is tested without sleeping. Keys stay valid for
many calls until they expire, as OpenAI's do; expired ones are purged as the store
is used, so it never grows without bound.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.realtime.session import SessionConfig

KEY_PREFIX = "ek_"
MIN_TTL_S = 10
MAX_TTL_S = 7200
DEFAULT_TTL_S = 600
# A bound on live keys: a client looping on the token endpoint must not eat memory.
MAX_LIVE_KEYS = 10_000


@dataclass(frozen=True)
class IssuedKey:
    value: str
    expires_at: float  # unix seconds
    session: SessionConfig


class EphemeralKeyStore:
    def __init__(self, clock: Callable[[], float] = time.time, max_live: int = MAX_LIVE_KEYS) -> None:
        self._clock = clock
        self._max_live = max_live
        self._keys: dict[str, IssuedKey] = {}

    def issue(self, ttl_s: int, session: SessionConfig) -> IssuedKey:
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl must be {MIN_TTL_S}-{MAX_TTL_S} s, got {ttl_s}")
        self._purge()
        if len(self._keys) >= self._max_live:
            # Drop the key closest to expiry rather than refuse: the newest client wins.
            oldest = min(self._keys.values(), key=lambda k: k.expires_at)
            del self._keys[oldest.value]
        key = IssuedKey(KEY_PREFIX + secrets.token_urlsafe(24), self._clock() + ttl_s, session)
        self._keys[key.value] = key
        return key

    def lookup(self, value: str) -> IssuedKey | None:
        """The live key with this value, or None when unknown or expired."""
        key = self._keys.get(value)
        if key is None:
            return None
        if key.expires_at <= self._clock():
            del self._keys[value]
            return None
        return key

    def __len__(self) -> int:
        self._purge()
        return len(self._keys)

    def _purge(self) -> None:
        now = self._clock()
        for value in [v for v, k in self._keys.items() if k.expires_at <= now]:
            del self._keys[value]
