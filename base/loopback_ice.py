"""ICE: which servers a call uses, and keeping a loopback call on loopback.

aioice gathers host candidates on every interface except loopback, and aiortc's
default configuration contacts a public STUN server. A call to a provider on a
loopback address (the local server, every test) must do neither, so the process-wide
patch of aioice's address lookup lives here and nowhere else.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable

import aioice.ice

log = logging.getLogger(__name__)

_original_get_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
_lock = threading.Lock()
_loopback_users = 0


def _loopback_addresses(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
    addresses = []
    if use_ipv4:
        addresses.append("127.0.0.1")
    if use_ipv6 and not use_ipv4:
        addresses.append("::1")
    return addresses


def is_loopback_host(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def acquire_loopback_only() -> None:
    """Offer only 127.0.0.1 host candidates until the matching release.

    Counted, so several loopback calls in one process can overlap.
    """
    global _loopback_users
    with _lock:
        _loopback_users += 1
        aioice.ice.get_host_addresses = _loopback_addresses


def release_loopback_only() -> None:
    global _loopback_users
    with _lock:
        _loopback_users = max(0, _loopback_users - 1)
        if _loopback_users == 0:
            aioice.ice.get_host_addresses = _original_get_host_addresses
