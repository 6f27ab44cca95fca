"""What the hubs page shows of each hub, read at most once per `ttl_s` however many people look:
the page must not turn into an SSH storm against the enforcement points."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

TTL_S = 15.0
TIMEOUT_S = 5.0


class HubStatuses:
    def __init__(
        self, hubs: Mapping[str, object], *, ttl_s: float = TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._hubs = hubs
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks = {name: asyncio.Lock() for name in hubs}

    async def all(self) -> dict[str, dict[str, Any]]:
        names = sorted(self._hubs)
        statuses = await asyncio.gather(*(self.of(n) for n in names))
        return dict(zip(names, statuses, strict=True))

    async def of(self, name: str) -> dict[str, Any]:
        """The hub's status (`SshHub.status()`), from the cache while it is younger than `ttl_s`; one read at a
        time per hub, the others wait for it."""
        async with self._locks[name]:
            cached = self._cache.get(name)
            if cached is not None and self._clock() - cached[0] < self._ttl_s:
                return cached[1]
            status = await self._read(name)
            self._cache[name] = (self._clock(), status)
            return status

    async def _read(self, name: str) -> dict[str, Any]:
        hub = self._hubs[name]
        read = getattr(hub, "status", None)
        if read is None:
            return {"hub": name, "reachable": None, "error": "this kind of hub reports no status"}
        try:
            async with asyncio.timeout(TIMEOUT_S):
                status: dict[str, Any] = await read()
        except TimeoutError:
            return {"hub": name, "reachable": False, "error": f"no answer within {TIMEOUT_S:g} s"}
        return status
