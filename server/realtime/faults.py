"""Fault injection for tests: every flag off by default, each one a real misbehaviour."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Faults:
    drop_after_s: float | None = None
    stall_datachannel: bool = False
    sdp_delay_ms: int = 0
    token_status: int | None = None
    token_count: int = 0  # how many more token requests fail with token_status

    def take_token_failure(self) -> int | None:
        """The status to fail this token request with, or None to serve it."""
        if self.token_status is None or self.token_count <= 0:
            return None
        self.token_count -= 1
        return self.token_status
