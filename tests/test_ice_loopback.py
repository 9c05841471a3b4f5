"""The process-wide loopback patch: counted, so overlapping loopback calls don't undo each other."""

from __future__ import annotations

import aioice.ice
import pytest

from base import loopback_ice


def test_loopback_candidates_only_while_held_and_counted():
    original = aioice.ice.get_host_addresses
    loopback_ice.acquire_loopback_only()
    loopback_ice.acquire_loopback_only()
    try:
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
        loopback_ice.release_loopback_only()  # one call ends; the other still runs on loopback
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    finally:
        loopback_ice.release_loopback_only()
    assert aioice.ice.get_host_addresses is original
    loopback_ice.release_loopback_only()  # an extra release is harmless
    assert aioice.ice.get_host_addresses is original


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("10.0.0.1", False), ("192.168.1.2", False), ("api.openai.com", False), ("", False),
    (None, False),
])
def test_is_loopback_host(host, loopback):
    assert loopback_ice.is_loopback_host(host) is loopback
