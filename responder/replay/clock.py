"""The replay clock: the service's `clock`, moved by the runner.

Virtual time is `start + offset + real time elapsed since the last move`: between deliveries it runs
like a wall clock (so latencies read off the journal's timestamps are real), and a delivery at `5m`
moves it five minutes on at once, so TTLs and expiry play out in seconds.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class VirtualClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.start = start or datetime.now(UTC)
        self._offset = 0.0
        self._since = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=self._offset + time.monotonic() - self._since)

    @property
    def offset(self) -> float:
        """Seconds since the start, virtual."""
        return (self() - self.start).total_seconds()

    def advance_to(self, offset: float) -> None:
        """Move to `offset` seconds after the start; never backwards."""
        self._offset = max(offset, self.offset)
        self._since = time.monotonic()
