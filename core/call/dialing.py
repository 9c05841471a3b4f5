"""Where the next attempt connects, and how: the provider, the built-in server, the ICE plan.

Kept across the attempts of one call: the HTTP session, the built-in server (started
on first use, restarted if it died), the STUN probe's answer (probed once a call: it
rarely changes), and how many attempts in a row failed (that picks the TURN transport).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import aiohttp
from aiortc import RTCConfiguration

from core import ice_servers
from core.config import Secrets, Settings
from core.local_server import LocalServer
from core.providers import Provider, make_provider

log = logging.getLogger(__name__)

_NOT_PROBED = object()


class Dialer:
    def __init__(self, settings: Settings, secrets: Secrets, *, stun_probe_timeout: float,
                 provider_wrapper: Callable[[Provider], Provider] | None = None) -> None:
        self.settings = settings
        self._secrets = secrets
        self._stun_probe_timeout = stun_probe_timeout
        # Benchmarks put a jitter relay between the peers by rewriting the SDP through this.
        self._provider_wrapper = provider_wrapper
        self._http: aiohttp.ClientSession | None = None
        self._local: LocalServer | None = None
        self._stun_url: object = _NOT_PROBED
        self.failed_attempts = 0  # attempts in a row that never connected

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self._http

    async def provider(self) -> Provider:
        """The provider to call now; starts (or restarts) the built-in server on its own timeout."""
        if self.settings.provider == "local":
            if self._local is None:
                self._local = LocalServer()
            await self._local.ensure_running()
            provider = make_provider(self.settings, None, self._local.base_url, self._local.server_key)
        else:
            provider = make_provider(self.settings, self._secrets.api_key)
        return self._provider_wrapper(provider) if self._provider_wrapper is not None else provider

    async def configuration(self, provider: Provider) -> RTCConfiguration:
        turn = None
        if not provider.is_loopback:
            turn = ice_servers.resolve_turn(os.environ, self.settings.turn_server, self.settings.turn_username,
                                            self._secrets.turn_password)
        plan = ice_servers.IcePlan(turn=turn, loopback=provider.is_loopback)
        if plan.needs_probe and self._stun_url is _NOT_PROBED:
            self._stun_url = await ice_servers.probe_stun(plan.stun_urls, self._stun_probe_timeout)
        stun_url = self._stun_url if isinstance(self._stun_url, str) else None
        log.info("ICE: %s", plan.describe(self.failed_attempts, stun_url))
        return plan.configuration(self.failed_attempts, stun_url)

    async def close(self) -> None:
        if self._local is not None:
            await self._local.stop()
            self._local = None
        if self._http is not None:
            await self._http.close()
            self._http = None
