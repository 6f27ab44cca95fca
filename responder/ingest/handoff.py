"""Handing a delivery and its events off durably: the webhook answers and the Kafka offset is committed
only after this returns. The journal implements it; the source never decides anything itself."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from responder.core.events import Event
from responder.journal import Accepted, DeliveryRecord, EventRecord, Journal


class Handoff(Protocol):
    async def accept(self, delivery: DeliveryRecord, events: Sequence[Event]) -> Accepted: ...
    async def accept_batch(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]: ...


def partition_key(event: Event) -> str:
    """The key that keeps all events of one subject together (one partition, one instance)."""
    s = event.subjects
    for value in (*s.users, *s.devices, *map(str, s.keys), *map(str, s.addresses)):
        return str(value)
    return event.dedup_key


class JournalHandoff:
    def __init__(self, journal: Journal, owner: str) -> None:
        self._journal = journal
        self._owner = owner

    async def accept(self, delivery: DeliveryRecord, events: Sequence[Event]) -> Accepted:
        (accepted,) = await self.accept_batch([(delivery, events)])
        return accepted

    async def accept_batch(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]:
        batch = [(delivery, [_record(e) for e in events]) for delivery, events in items]
        return await self._journal.accept_batch(batch, self._owner)


def _record(e: Event) -> EventRecord:
    return EventRecord(e.dedup_key, partition_key(e), e.time.isoformat(), e.model_dump_json())


class Waking:
    """A hand-off that wakes the pipeline when something new arrived (it also polls, for resumption)."""

    def __init__(self, inner: Handoff, wake: asyncio.Event) -> None:
        self._inner = inner
        self._wake = wake

    async def accept(self, delivery: DeliveryRecord, events: Sequence[Event]) -> Accepted:
        accepted = await self._inner.accept(delivery, events)
        if accepted.new:
            self._wake.set()
        return accepted

    async def accept_batch(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]:
        accepted = await self._inner.accept_batch(items)
        if any(a.new for a in accepted):
            self._wake.set()
        return accepted
