"""Handing a delivery and its events off durably: the webhook answers and the Kafka offset is committed
only after this returns. The journal implements it; the source never decides anything itself."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from responder.core.events import MAX_CLOCK_SKEW, Event, Severity, Source, bounded_by_receipt
from responder.core.identifiers import address_text
from responder.journal import Accepted, DeliveryRecord, EventRecord, Journal, Lane


class Handoff(Protocol):
    async def accept(self, delivery: DeliveryRecord, events: Sequence[Event]) -> Accepted: ...
    async def accept_batch(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]: ...


def partition_key(event: Event) -> str:
    """The key that keeps all events of one subject together (one partition, one instance)."""
    s = event.subjects
    if s.users:
        return s.users[0]
    if s.devices:
        return s.devices[0]
    if s.keys:
        return str(s.keys[0])
    return address_text(s.addresses[0]) if s.addresses else event.dedup_key


# Identity providers and shared signals push one account's compromise as it happens: a cut-off waits on them.
_URGENT_SOURCES = frozenset({Source.OKTA, Source.ENTRA, Source.SSF})


def lane_of(event: Event) -> Lane:
    """Urgent: a webhook source's event, or one of high severity from any source; bulk: the rest (a SIEM's
    stream). The pipeline decides urgent events ahead of a bulk backlog."""
    if event.source in _URGENT_SOURCES or event.severity >= Severity.HIGH:
        return Lane.URGENT
    return Lane.BULK


ROOM_WAIT_S = 2.0


class JournalHandoff:
    """Hands deliveries to the journal with group commit: deliveries that arrive while a write is in
    flight go together in the next transaction, so concurrent senders share one commit (and one fsync)
    instead of queueing for one each. Every caller still returns only after its own delivery is durable.

    Every event is dated at most `max_skew` after its delivery's receipt (`bounded_by_receipt`): this is
    the one way into the journal, and so into the engine."""

    def __init__(
        self,
        journal: Journal,
        owner: str,
        parsed: ParsedEvents | None = None,
        *,
        max_skew: timedelta = MAX_CLOCK_SKEW,
    ) -> None:
        self._journal = journal
        self._owner = owner
        self._parsed = parsed
        self._max_skew = max_skew
        self._queue: list[tuple[DeliveryRecord, list[EventRecord], asyncio.Future[Accepted]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def accept(self, delivery: DeliveryRecord, events: Sequence[Event]) -> Accepted:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        events = self._bounded(delivery, events)
        self._queue.append((delivery, [_record(e) for e in events], future))
        if self._writer is None or self._writer.done():
            # A task of its own: a caller that goes away must not strand the deliveries queued behind it.
            self._writer = loop.create_task(self._drain())
        accepted = await future
        self._keep(events, accepted)
        return accepted

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                written = await self._journal.accept_batch([(d, r) for d, r, _ in batch], self._owner)
            except Exception as exc:  # every waiter learns its delivery was not stored
                for _, _, waiting in batch:
                    if not waiting.done():
                        waiting.set_exception(exc)
                continue
            for (_, _, waiting), accepted in zip(batch, written, strict=True):
                if not waiting.done():
                    waiting.set_result(accepted)

    async def accept_batch(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]:
        if self._parsed is not None:
            await self._parsed.room(sum(len(events) for _, events in items), timeout=ROOM_WAIT_S)
        receipts: dict[str, tuple[datetime, float]] = {}  # a Kafka slice's deliveries share one receipt
        items = [(delivery, self._bounded(delivery, events, receipts)) for delivery, events in items]
        batch = [(delivery, [_record(e) for e in events]) for delivery, events in items]
        accepted = await self._journal.accept_batch(batch, self._owner)
        for (_, events), a in zip(items, accepted, strict=True):
            self._keep(events, a)
        return accepted

    def _bounded(
        self,
        delivery: DeliveryRecord,
        events: Sequence[Event],
        receipts: dict[str, tuple[datetime, float]] | None = None,
    ) -> Sequence[Event]:
        if not events:
            return events
        receipts = {} if receipts is None else receipts
        receipt = receipts.get(delivery.received_at)
        if receipt is None:
            received = datetime.fromisoformat(delivery.received_at)
            receipt = receipts[delivery.received_at] = (received, (received + self._max_skew).timestamp())
        received, latest = receipt
        return [e if e.epoch <= latest else bounded_by_receipt(e, received, self._max_skew) for e in events]

    def _keep(self, events: Sequence[Event], accepted: Accepted) -> None:
        if self._parsed is not None:
            for event, seq in zip(events, accepted.seqs, strict=True):
                if seq is not None:
                    self._parsed.put(seq, event)


class ParsedEvents:
    """Events just stored by this instance, by journal sequence number, kept for its pipeline: it takes
    them from here instead of parsing back the JSON just written (as much time per event as deciding).
    The journal stays the truth: an event not found here (evicted past `limit`, after a restart, taken
    over from another instance) is read from the journal, and reads the same."""

    def __init__(self, limit: int = 20_000) -> None:
        self._limit = limit
        self._events: dict[int, Event] = {}
        self._taken = asyncio.Event()

    async def room(self, wanted: int, timeout: float) -> None:
        """Wait until `wanted` more events fit, as long as the pipeline takes events at least once every
        `timeout`. A batch source (Kafka) then runs as fast as decisions are made, its backlog showing as
        consumer lag where operators look for it, rather than racing ahead into the journal: an event
        pushed out of here is read back from the journal and parsed again, which costs more than it did
        to make. A pipeline that takes nothing for `timeout` is stuck or gone: the batch is stored anyway,
        the journal is the buffer."""
        while self._events and len(self._events) + wanted > self._limit:
            self._taken.clear()
            try:
                await asyncio.wait_for(self._taken.wait(), timeout)
            except TimeoutError:
                return

    def put(self, seq: int, event: Event) -> None:
        if self._limit <= 0:
            return
        if len(self._events) >= self._limit:
            del self._events[next(iter(self._events))]  # the oldest: dicts keep insertion order
        self._events[seq] = event

    def take(self, seq: int) -> Event | None:
        event = self._events.pop(seq, None)
        if event is not None:
            self._taken.set()
        return event


def _record(e: Event) -> EventRecord:
    return EventRecord(e.dedup_key, partition_key(e), e.time.isoformat(), e.canonical_json, lane_of(e))


class Waking:
    """A hand-off that wakes the pipeline when something new arrived (it also polls, for resumption), and
    tells it, with `urgent`, when an urgent event did: a bulk batch being decided then stops early."""

    def __init__(self, inner: Handoff, wake: asyncio.Event, urgent: asyncio.Event | None = None) -> None:
        self._inner = inner
        self._wake = wake
        self._urgent = urgent

    async def accept(self, delivery: DeliveryRecord, events: Sequence[Event]) -> Accepted:
        accepted = await self._inner.accept(delivery, events)
        if accepted.new:
            self._note_urgent(events)
            self._wake.set()
        return accepted

    async def accept_batch(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]:
        accepted = await self._inner.accept_batch(items)
        if any(a.new for a in accepted):
            for _, events in items:
                self._note_urgent(events)
            self._wake.set()
        return accepted

    def _note_urgent(self, events: Sequence[Event]) -> None:
        if self._urgent is not None and any(lane_of(e) is Lane.URGENT for e in events):
            self._urgent.set()
