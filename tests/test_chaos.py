"""Chaos in the normal suite: 10 kills of the local server in one call (bench/chaos.py runs 50)."""

from __future__ import annotations

import json

import pytest

from bench.chaos import CONVERSATION, chaos

CYCLES = 10


@pytest.mark.timeout(300)
async def test_ten_kills_in_one_call_all_recovered_nothing_leaked(tmp_path, private_home) -> None:
    result = await chaos(CYCLES, seed=7, tmp=tmp_path)
    print(json.dumps(result))
    assert result["recovered"] == CYCLES, result
    assert result["killed_mid_handshake"] >= 1, "no kill landed mid-handshake: the seed no longer tests it"
    assert result["conversation_kept"], f"the first {len(CONVERSATION)} messages changed"
    for name in ("threads", "fds", "tasks"):
        assert result["after"][name] <= result["before"][name], (name, result["before"], result["after"])
