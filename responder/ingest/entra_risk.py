"""Entra ID Protection by polling Graph, for tenants without Event Hubs: risk detections and risky users.

Each round reads `/identityProtection/riskDetections` (`detectedDateTime ge X`; application permission
IdentityRiskEvent.Read.All) and `/identityProtection/riskyUsers` (`riskLastUpdatedDateTime ge X`;
IdentityRiskyUser.Read.All) page by page, and turns each object into the same canonical event as the Event
Hubs path (`entra.identity_protection_event`): the same rules apply, and the same dedup key makes an object
read by both paths, or read twice here, one event.

The cursor of each collection (the newest time seen, and the ids seen at that time) is saved in the journal
only after a round's events are accepted: a crash re-reads the round, and the dedup keys drop it. Each
query starts `overlap_s` before the cursor, because Identity Protection backdates offline detections;
what is older still is caught as the risky user's `riskLastUpdatedDateTime` moves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from responder.core.events import Event
from responder.ingest import entra
from responder.ingest.errors import PayloadError
from responder.ingest.graph_client import ERROR_KINDS, GraphClient, GraphError, Throttled, round_failure
from responder.ingest.handoff import Handoff
from responder.ingest.paths import parse_time
from responder.journal import DeliveryRecord, Journal
from responder.telemetry.metrics import Metrics, bounded

log = logging.getLogger(__name__)
SOURCE = "entra.risk"
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Collection:
    kind: str  # entra.identity_protection_event's kind
    path: str
    time_field: str


COLLECTIONS = (
    Collection("riskDetection", "/identityProtection/riskDetections", "detectedDateTime"),
    Collection("riskyUser", "/identityProtection/riskyUsers", "riskLastUpdatedDateTime"),
)


@dataclass(frozen=True)
class RiskPolling:
    interval_s: float = 60.0
    first_lookback_s: float = 86_400.0  # the very first round reads this far back
    overlap_s: float = 3600.0
    max_backoff_s: float = 600.0


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class RiskPoller:
    def __init__(
        self,
        client: GraphClient,
        journal: Journal,
        handoff: Handoff,
        metrics: Metrics,
        *,
        settings: RiskPolling = RiskPolling(),
        now: Clock,
    ) -> None:
        self._client = client
        self._journal = journal
        self._handoff = handoff
        self._metrics = metrics
        self._settings = settings
        self._now = now
        self._last_ok: datetime | None = None
        self._last_error: str | None = None
        # Dedup keys handed off lately, by the time they were read at: the overlap reads them again every
        # round, and the journal would only count them as duplicates.
        self._recent: dict[str, datetime] = {}

    @property
    def ready(self) -> bool:
        return self._last_ok is not None and self._last_error is None

    def status(self) -> dict[str, object]:
        if self._last_error is not None:
            return {"ready": False, "detail": self._last_error}
        if self._last_ok is None:
            return {"ready": False, "detail": "no successful poll yet"}
        return {"ready": True, "detail": f"last poll {_iso(self._last_ok)}"}

    async def run(self) -> None:
        """Poll until cancelled; an error is counted, logged and waited out (longer each time), never raised."""
        failures = 0
        while True:
            wait = self._settings.interval_s
            try:
                await self.poll()
                failures = 0
            except Throttled as exc:
                self._failed("rate_limited", exc)
                wait = max(wait, exc.retry_after_s)
            except Exception as exc:  # Graph, the journal, a bug: counted and logged, never the service's end
                failures += 1
                self._failed("error", round_failure(exc, SOURCE, log))
                wait = min(self._settings.interval_s * 2**failures, self._settings.max_backoff_s)
            self._metrics.source_lag.labels(SOURCE).set(self._lag())
            await asyncio.sleep(wait)

    def _failed(self, outcome: str, exc: GraphError) -> None:
        self._metrics.source_polls.labels(SOURCE, outcome).inc()
        self._metrics.source_errors.labels(SOURCE, bounded(exc.kind, ERROR_KINDS)).inc()
        self._last_error = str(exc)
        log.warning("%s: %s", SOURCE, exc)

    def _lag(self) -> float:
        return (self._now() - self._last_ok).total_seconds() if self._last_ok else 0.0

    async def poll(self) -> int:
        """One round over both collections; the number of events newly accepted."""
        state = await self._journal.source_state(SOURCE) or {}
        new = 0
        for collection in COLLECTIONS:
            cursor = state.get(collection.kind) or {}
            added, state[collection.kind] = await self._collection(collection, cursor)
            new += added
            # Saved only now that this collection's events are in the journal.
            await self._journal.save_source_state(SOURCE, state, _iso(self._now()))
        self._metrics.source_polls.labels(SOURCE, "ok").inc()
        self._last_ok, self._last_error = self._now(), None
        return new

    async def _collection(self, c: Collection, cursor: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        since = _cursor_time(cursor) or self._now() - timedelta(seconds=self._settings.first_lookback_s)
        seen = set(cursor.get("ids") or ())
        start = since - timedelta(seconds=self._settings.overlap_s) if cursor else since
        url = f"{c.path}?$filter={c.time_field} ge {_iso(start)}"
        newest, at_newest, new = since, set(seen), 0
        async for page in self._client.pages(url):
            events: list[Event] = []
            for obj in page.items:
                stamp = _time_of(obj, c.time_field)
                if stamp is None:
                    log.warning("%s: a %s without %s was skipped", SOURCE, c.kind, c.time_field)
                    continue
                if stamp == since and str(obj.get("id")) in seen:
                    continue  # read at the cursor last round
                try:
                    event = entra.identity_protection_event(obj, kind=c.kind)
                except PayloadError as exc:
                    log.warning("%s: a %s was skipped: %s", SOURCE, c.kind, exc)
                    continue
                if event.dedup_key not in self._recent:
                    events.append(event)
                if stamp > newest:
                    newest, at_newest = stamp, set()
                if stamp == newest:
                    at_newest.add(str(obj.get("id")))
            if events:
                new += await self._accept(c, page.items, events)
                self._recent.update((e.dedup_key, _time_of(e.attributes, c.time_field) or newest) for e in events)
        horizon = newest - timedelta(seconds=self._settings.overlap_s)
        self._recent = {k: t for k, t in self._recent.items() if t >= horizon}
        return new, {"since": _iso(newest), "ids": sorted(at_newest)}

    async def _accept(self, c: Collection, items: list[dict[str, Any]], events: list[Event]) -> int:
        body = json.dumps({"value": items}, sort_keys=True).encode()
        digest = hashlib.sha256(body).hexdigest()[:32]
        delivery = DeliveryRecord(f"{SOURCE}:{c.kind}:{digest}", "entra", _iso(self._now()), body=body)
        accepted = await self._handoff.accept(delivery, events)
        self._metrics.events.labels("entra").inc(accepted.new)
        self._metrics.duplicates.labels("entra").inc(accepted.duplicates)
        return accepted.new


def _time_of(obj: dict[str, Any], name: str) -> datetime | None:
    try:
        return parse_time(obj.get(name), field=name)
    except PayloadError:
        return None


def _cursor_time(cursor: dict[str, Any]) -> datetime | None:
    try:
        return parse_time(cursor.get("since"), field="since") if cursor.get("since") else None
    except PayloadError:
        return None
