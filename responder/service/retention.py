"""Journal retention: the service prunes what no restart and no operator needs any more, so the journal
stops growing. Events (and the raw deliveries they came in) are kept for the longest rule window or TTL,
which is what the engine is rebuilt from, plus a margin; ended decisions and the audit trail much longer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from responder.journal import Journal
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """What is older than these goes (ISO times, compared as the journal writes them)."""

    events_before: str
    decisions_before: str

    @classmethod
    def at(cls, now: datetime, *, horizon_s: float, margin_s: float, decisions_days: float) -> Cutoffs:
        return cls(
            events_before=(now - timedelta(seconds=horizon_s + margin_s)).isoformat(),
            decisions_before=(now - timedelta(days=decisions_days)).isoformat(),
        )


class Retention:
    def __init__(
        self,
        journal: Journal,
        clock: Callable[[], datetime],
        metrics: Metrics,
        *,
        horizon_s: Callable[[], float],
        margin_s: float,
        decisions_days: float,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._metrics = metrics
        self._horizon_s = horizon_s  # read at each prune: the rules (and their windows) may be replaced
        self._margin_s = margin_s
        self._decisions_days = decisions_days

    async def prune(self) -> dict[str, int]:
        cutoffs = Cutoffs.at(
            self._clock(), horizon_s=self._horizon_s(), margin_s=self._margin_s, decisions_days=self._decisions_days
        )
        pruned = await self._journal.prune(
            events_before=cutoffs.events_before, decisions_before=cutoffs.decisions_before
        )
        for table, rows in pruned.items():
            self._metrics.pruned.labels(table).inc(rows)
        if any(pruned.values()):
            log.info(
                "journal retention: deleted %s (events before %s, decisions and audit before %s)",
                ", ".join(f"{n} {table}" for table, n in pruned.items()), cutoffs.events_before,
                cutoffs.decisions_before,
            )  # fmt: skip
        return pruned

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Prune now and every `interval_s` until `stop`; a failed pass is logged and tried again later."""
        while not stop.is_set():
            try:
                await self.prune()
            except Exception:
                log.exception("journal retention pass failed; trying again in %.0f s", interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
