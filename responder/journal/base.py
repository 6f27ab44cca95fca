"""The journal's behaviour, once, over a minimal SQL connection interface both engines provide."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from responder.journal.errors import Availability, JournalUnavailable
from responder.journal.records import (
    Accepted,
    AuditEntry,
    DecisionRecord,
    DecisionState,
    DeliveryRecord,
    EventOutcome,
    EventRecord,
    EventStatus,
    FinishedIntent,
    IntentKind,
    IntentRecord,
    IntentState,
    Lane,
    StoredEvent,
    StoredIntent,
)

Row = Mapping[str, Any]


class Tx(Protocol):
    """One transaction. SQL uses `?` placeholders; engines translate."""

    async def execute(self, sql: str, *args: object) -> int: ...
    async def fetch(self, sql: str, *args: object) -> list[Row]: ...

    async def fetch_values(self, sql: str, *args: object) -> list[Sequence[Any]]:
        """As `fetch`, its rows read by position only: for the reads of every event, where building a row
        readable by name costs more than the read itself."""

    def defer(self, sql: str, *args: object) -> None:
        """A statement whose result is not needed: it runs, in order and in the same transaction, with
        the next `execute` or `fetch` or at commit, so it costs no round trip of its own. Its error, if
        any, comes from that later call (and rolls the transaction back all the same)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    trace TEXT NOT NULL,
    headers TEXT NOT NULL,
    body {blob}
);
CREATE TABLE IF NOT EXISTS events (
    seq {serial},
    dedup_key TEXT NOT NULL UNIQUE,
    delivery_id TEXT NOT NULL REFERENCES deliveries(id),
    subject TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    body TEXT NOT NULL,
    trace TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    processed_at TEXT,
    lane INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS events_delivery ON events (delivery_id);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, seq);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    response TEXT NOT NULL,
    level INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at DOUBLE PRECISION,
    body TEXT NOT NULL,
    trace TEXT NOT NULL,
    event_seq BIGINT
);
CREATE INDEX IF NOT EXISTS decisions_state ON decisions (state, subject);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (created_at);
CREATE TABLE IF NOT EXISTS intents (
    id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL REFERENCES decisions(id),
    ordinal INTEGER NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    irreversible BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    verified BOOLEAN,
    restore TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    trace TEXT NOT NULL,
    pending_since TEXT,
    next_try_at TEXT
);
CREATE INDEX IF NOT EXISTS intents_open ON intents (state, created_at);
CREATE INDEX IF NOT EXISTS intents_decision ON intents (decision_id, ordinal);
CREATE TABLE IF NOT EXISTS source_state (
    source TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq {serial},
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    decision_id TEXT,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at DOUBLE PRECISION NOT NULL,
    created_at TEXT NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, owner, channel, next_try_at);
CREATE TABLE IF NOT EXISTS used_once (
    key TEXT PRIMARY KEY,
    used_at TEXT NOT NULL,
    keep_until TEXT NOT NULL
);
"""

# Columns added after the first release: a journal written before gets them on open (each engine's `open`).
ADDED_COLUMNS = (
    ("intents", "pending_since", "TEXT"),
    ("intents", "next_try_at", "TEXT"),
    ("events", "lane", "INTEGER NOT NULL DEFAULT 1"),  # a journal written before: every event bulk
)
# Indexes added after the first release, created after the columns they name. The pending ones are partial
# (pending rows only), so that they stay as small as the backlog and a bulk event costs them nothing once
# processed; their queries name 'pending' and the lane as literals, or the planners could not prove the
# predicate and would not use them. `events_processed_at` leaves out the pending rows' NULL, so that an event
# enters it once, when marked, instead of leaving a NULL entry then; a comparison on processed_at (retention,
# the rebuild on start) implies NOT NULL to both planners.
ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_urgent ON events (owner, seq) WHERE status = 'pending' AND lane = 0",
    "CREATE INDEX IF NOT EXISTS events_pending_subject ON events (subject, seq) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS events_pending_owner ON events (owner, seq) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS events_processed_at ON events (processed_at) WHERE processed_at IS NOT NULL",
)
# Indexes a journal written before may have, dropped on open: every one is a b-tree written per event.
# events_pending and events_processed were full-table versions of the two partial indexes above (a processed
# event moved within them, and stayed); nothing reads events by occurred_at.
DROPPED_INDEXES = ("events_pending", "events_processed", "events_time")

_OPEN = (IntentState.PENDING, IntentState.RUNNING)
# Decisions retention may delete: over, with nothing left on a hub. A replaced one is not (its actions stay
# in force under the stronger decision, and are undone with it), nor one with an intent open or failed.
_ENDED = (DecisionState.EXPIRED, DecisionState.UNDONE, DecisionState.REJECTED, DecisionState.DRY_RUN)
_UNSETTLED = (IntentState.PENDING, IntentState.RUNNING, IntentState.AWAITING_APPROVAL, IntentState.FAILED)
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# Events a bulk writer stores between two looks at whether another writer waits: about 5 ms of the
# journal's thread on this machine, what an urgent delivery may wait for beyond its own commit.
_PART = 250
# The two statements every event costs, shared with an engine that runs them its own way (SQLite's).
EVENT_INSERT = (
    "INSERT INTO events (dedup_key, delivery_id, subject, occurred_at, body, trace, owner, status, lane)"
    " VALUES {values} ON CONFLICT (dedup_key) DO NOTHING"
)
MARK_PROCESSED = (
    "UPDATE events SET status = 'processed', processed_at = ? WHERE status = 'pending' AND seq IN ({marks})"
)


def _parts(
    items: Sequence[tuple[DeliveryRecord, Sequence[EventRecord]]], size: int
) -> list[Sequence[tuple[DeliveryRecord, Sequence[EventRecord]]]]:
    """Consecutive deliveries with at least `size` events between them (the last part fewer); a delivery
    and its events are never split."""
    parts: list[Sequence[tuple[DeliveryRecord, Sequence[EventRecord]]]] = []
    start = count = 0
    for n, (_, events) in enumerate(items, 1):
        count += len(events)
        if count >= size:
            parts.append(items[start:n])
            start, count = n, 0
    if start < len(items):
        parts.append(items[start:])
    return parts


def _dump(mapping: Mapping[str, str]) -> str:
    return json.dumps(mapping) if mapping else "{}"  # most deliveries carry no trace context or headers


def _load(text: str) -> dict[str, str]:
    return json.loads(text) if text != "{}" else {}


@lru_cache(maxsize=256)
def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


@lru_cache(maxsize=256)
def _rows(n: int, columns: int) -> str:
    """`(?, ?), (?, ?)`: placeholders for a multi-row VALUES (only '?', never a value)."""
    return ", ".join("(" + _marks(columns) + ")" for _ in range(n))


def _intent(row: Row) -> StoredIntent:
    return StoredIntent(
        id=row["id"],
        decision_id=row["decision_id"],
        ordinal=row["ordinal"],
        kind=IntentKind(row["kind"]),
        action=row["action"],
        state=IntentState(row["state"]),
        irreversible=bool(row["irreversible"]),
        attempts=row["attempts"],
        result=row["result"],
        verified=None if row["verified"] is None else bool(row["verified"]),
        restore=row["restore"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        trace=json.loads(row["trace"]),
        pending_since=row["pending_since"],
        next_try_at=row["next_try_at"],
    )


# The columns `_stored` reads, in its order.
_STORED = "e.seq, e.dedup_key, e.delivery_id, e.subject, {body}, e.trace, d.received_at, e.lane"
_LANES = {int(lane): lane for lane in Lane}


def _stored(row: Sequence[Any]) -> StoredEvent:
    seq, dedup_key, delivery_id, subject, body, trace, received_at, lane = row
    return StoredEvent(seq, dedup_key, delivery_id, subject, body, _load(trace), received_at, _LANES[lane])


def _decision(row: Row) -> DecisionRecord:
    return DecisionRecord(
        id=row["id"],
        subject=row["subject"],
        response=row["response"],
        level=row["level"],
        state=DecisionState(row["state"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        body=row["body"],
        trace=json.loads(row["trace"]),
    )


Statement = tuple[str, tuple[object, ...]]


def accept_statements(
    items: Sequence[tuple[DeliveryRecord, Sequence[EventRecord]]], owner: str
) -> tuple[list[Statement], list[tuple[object, ...]]]:
    """What storing deliveries and their events takes: the statements before the events' (deliveries,
    each rejected record in the audit trail), and the events' rows (the columns of `EVENT_INSERT`)."""
    pending = EventStatus.PENDING.value
    deliveries = list({d.id: d for d, _ in items}.values())
    traces = {d.id: _dump(d.trace) for d in deliveries}
    first: list[Statement] = []
    for some in _chunks(deliveries, 200):
        values = _rows(len(some), 6)
        sql = f"INSERT INTO deliveries (id, source, received_at, trace, headers, body) VALUES {values}"  # noqa: S608 - '?' only
        args = tuple(v for d in some for v in (d.id, d.source, d.received_at, traces[d.id], _dump(d.headers), d.body))
        first.append((sql + " ON CONFLICT (id) DO NOTHING", args))
    for d in deliveries:
        for r in d.rejected:  # each record a batch lost, with its reason, beside the delivery's body
            detail = json.dumps({"index": r.index, "id": r.record_id, "reason": r.reason}, sort_keys=True)
            first.append((
                "INSERT INTO audit (at, actor, kind, ref, detail) VALUES (?, ?, ?, ?, ?)",
                (d.received_at, d.source, "record.rejected", f"delivery:{d.id}", detail),
            ))  # fmt: skip
    rows: list[tuple[object, ...]] = [
        (e.dedup_key, d.id, e.subject, e.occurred_at, e.body, traces[d.id], owner, pending, int(e.lane))
        for d, events in items
        for e in events
    ]
    return first, rows


def takeover_statements(
    rows: Sequence[tuple[object, ...]], stored: Mapping[tuple[str, str], int], owner: str
) -> list[Statement]:
    """A duplicate still pending is taken over by this owner: its first owner may be gone."""
    duplicates = [row[0] for row in rows if (row[0], row[1]) not in stored]
    return [
        (
            f"UPDATE events SET owner = ? WHERE status = ? AND dedup_key IN ({_marks(len(keys))})",  # noqa: S608 - '?' only
            (owner, EventStatus.PENDING.value, *keys),
        )
        for keys in _chunks(duplicates, 400)
    ]


class Statements:
    """Deferred statements collected instead of run (the `defer` of a `Tx`), for an engine that runs them
    its own way, in one trip to its connection (SQLite's)."""

    def __init__(self) -> None:
        self.collected: list[Statement] = []

    def defer(self, sql: str, *args: object) -> None:
        self.collected.append((sql, args))


class SqlJournal(ABC):
    """Deliveries and their events are written before the sender is answered; decisions and their
    action intents are written together with the event's `processed` mark, before anything is executed;
    results after. So a crash at any point leaves either a pending event (processed again) or open
    intents (resumed), never a lost event or an action nobody knows about.

    A write that cannot be stored (disk full, read-only) raises `JournalUnavailable`, and
    `availability` says so until a write goes through again."""

    availability: Availability
    # How a query names the index it must use, in the engine's syntax ("" where the planner has statistics
    # and needs no telling). SQLite's planner, without them, takes the partial index on (owner, seq) for
    # the urgent events and their subjects' earlier ones, and reads every pending row (a SIEM backlog's
    # worth, on every round of the pipeline) to find a few.
    index_hint = ""

    @abstractmethod
    def transaction(self, *, bulk: bool = False) -> AbstractAsyncContextManager[Tx]:
        """One transaction. A `bulk` one (a SIEM batch, its plain processed marks) waits while any other
        is queued for the journal: the cut-off of a person does not queue behind a burst of alerts."""

    def _others_waiting(self) -> bool:
        """Whether a transaction that is not bulk waits for the one in progress to end: a bulk writer then
        commits what it has and lets it go first. Here never: a server runs transactions side by side."""
        return False

    @abstractmethod
    def read(self) -> AbstractAsyncContextManager[Tx]:
        """For one SELECT: consistent on its own (a statement is atomic), so without the round trips of a
        transaction's BEGIN and COMMIT, which the decision path would otherwise wait for."""

    @abstractmethod
    async def close(self) -> None: ...

    async def writable(self) -> bool:
        """Whether the journal stores now. After a failed write it tries a small write of its own, so
        readiness comes back by itself when the disk has room again, not only with the next delivery."""
        if self.availability.available:
            return True
        try:
            await self._probe()
        except JournalUnavailable:
            return False
        self.availability.succeeded()
        return True

    async def _probe(self) -> None:
        """The smallest write the engine can make; here, for a server, that it answers at all."""
        async with self.transaction() as tx:
            await tx.fetch("SELECT 1")

    async def accept_batch(
        self, items: Sequence[tuple[DeliveryRecord, Sequence[EventRecord]]], owner: str
    ) -> list[Accepted]:
        """Store deliveries and their events (a Kafka batch), with multi-row statements: one commit and a
        few round trips to the database, not one per event. Returns once all of it is durable. A duplicate
        event (same dedup key) is not stored again; if it is still pending, this owner takes it over (its
        first owner may be gone).

        One transaction, unless another writer that is not bulk queues meanwhile (a webhook's delivery):
        a batch of bulk events then commits what it has stored, every `_PART` events, lets that writer go
        first and goes on in a new transaction. A crash in between leaves the first part stored and the
        batch unacknowledged: it is delivered again and its dedup keys make the stored part a no-op."""
        stored: dict[tuple[str, str], int] = {}  # (dedup key, delivery id) -> seq, for the rows inserted now
        bulk = all(e.lane is Lane.BULK for _, events in items for e in events)
        parts = _parts(items, _PART)
        done = 0
        while done < len(parts):
            async with self.transaction(bulk=bulk) as tx:
                while done < len(parts):
                    await self._accept_part(tx, parts[done], owner, stored)
                    done += 1
                    if bulk and self._others_waiting():
                        break
        out: list[Accepted] = []
        for delivery, events in items:
            seqs = [stored.pop((e.dedup_key, delivery.id), None) for e in events]
            out.append(Accepted(tuple(seqs)))
        return out

    async def _accept_part(
        self,
        tx: Tx,
        items: Sequence[tuple[DeliveryRecord, Sequence[EventRecord]]],
        owner: str,
        stored: dict[tuple[str, str], int],
    ) -> None:
        first, rows = accept_statements(items, owner)
        for sql, args in first:
            tx.defer(sql, *args)
        for part in _chunks(rows, 400):
            for seq, dedup_key, delivery_id in await self._insert_events(tx, part):
                stored[(dedup_key, delivery_id)] = int(seq)
        for sql, args in takeover_statements(rows, stored, owner):
            tx.defer(sql, *args)

    async def _insert_events(self, tx: Tx, rows: Sequence[tuple[object, ...]]) -> list[Sequence[Any]]:
        """Insert event rows (the columns of `EVENT_INSERT`), a duplicate dedup key skipped: the
        (seq, dedup_key, delivery_id) of each row inserted."""
        sql = EVENT_INSERT.format(values=_rows(len(rows), 9))
        return await tx.fetch_values(sql + " RETURNING seq, dedup_key, delivery_id", *[v for r in rows for v in r])

    async def pending_events(self, owner: str, limit: int = 500, *, bodies: bool = True) -> list[StoredEvent]:
        """This owner's pending events in order. Without `bodies` (the caller has the events in memory),
        `body` is empty: read it with `event_bodies` for those it has not."""
        columns = _STORED.format(body="e.body" if bodies else "'' AS body")
        async with self.read() as tx:
            rows = await tx.fetch_values(
                f"SELECT {columns} FROM events e JOIN deliveries d ON d.id = e.delivery_id"  # noqa: S608 - fixed text
                " WHERE e.status = 'pending' AND e.owner = ? ORDER BY e.seq LIMIT ?",
                owner,
                limit,
            )
        return [_stored(r) for r in rows]

    async def urgent_events(self, owner: str, limit: int = 500, *, bodies: bool = True) -> list[StoredEvent]:
        """This owner's pending urgent events, each with every pending event of its subject before it, in
        order; empty when none is urgent. Deciding these ahead of the rest keeps every subject's events in
        their order: whatever of a subject is left pending comes after all of it that is taken here.

        At most `limit` earlier events: when a subject has more, the cut is at a sequence number, and
        only events (of either lane) up to it are taken, so the order still holds; the rest come next."""
        columns = _STORED.format(body="e.body" if bodies else "'' AS body")
        async with self.read() as tx:
            urgent = await tx.fetch_values(
                f"SELECT {columns} FROM events e{self.index_hint.format('events_urgent')}"  # noqa: S608 - fixed text
                " JOIN deliveries d ON d.id = e.delivery_id"
                " WHERE e.status = 'pending' AND e.lane = 0 AND e.owner = ? ORDER BY e.seq LIMIT ?",
                owner,
                limit,
            )
        if not urgent:
            return []
        last = int(urgent[-1][0])
        subjects = sorted({str(r[3]) for r in urgent})
        earlier: list[Sequence[Any]] = []
        async with self.read() as tx:
            for some in _chunks(subjects, 400):
                earlier += await tx.fetch_values(
                    f"SELECT {columns} FROM events e{self.index_hint.format('events_pending_subject')}"  # noqa: S608 - '?' only
                    " JOIN deliveries d ON d.id = e.delivery_id"
                    f" WHERE e.status = 'pending' AND e.subject IN ({_marks(len(some))}) AND e.seq < ?"
                    " AND e.lane <> 0 AND e.owner = ? ORDER BY e.seq LIMIT ?",
                    *some,
                    last,
                    owner,
                    limit + 1,
                )
        earlier.sort(key=lambda r: int(r[0]))
        if len(earlier) > limit:
            # Not all of them: up to the last one taken, and nothing of these subjects after it.
            cut = int(earlier[limit - 1][0])
            earlier, urgent = earlier[:limit], [r for r in urgent if int(r[0]) < cut]
        return [_stored(r) for r in sorted([*urgent, *earlier], key=lambda r: int(r[0]))]

    async def event_bodies(self, seqs: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        async with self.read() as tx:
            for some in _chunks(seqs, 400):
                sql = f"SELECT seq, body FROM events WHERE seq IN ({_marks(len(some))})"  # noqa: S608 - '?' only
                out.update({int(r["seq"]): str(r["body"]) for r in await tx.fetch(sql, *some)})
        return out

    async def pending_of_others(self, owner: str) -> list[tuple[int, str]]:
        """Pending events another instance owns: (seq, subject key), for a take-over after a rebalance."""
        async with self.read() as tx:
            rows = await tx.fetch("SELECT seq, subject FROM events WHERE status = 'pending' AND owner <> ?", owner)
        return [(int(r["seq"]), str(r["subject"])) for r in rows]

    async def take_over(self, seqs: Sequence[int], owner: str) -> int:
        async with self.transaction() as tx:
            taken = 0
            for seq in seqs:
                taken += await tx.execute(
                    "UPDATE events SET owner = ? WHERE seq = ? AND status = ?", owner, seq, EventStatus.PENDING.value
                )
        return taken

    async def processed_events_since(self, processed_at: str) -> list[StoredEvent]:
        """Events processed at or after a time, in processing order: to rebuild risk state on start.
        By processing time, not event time: a late delivery of an old event counted when it arrived."""
        async with self.read() as tx:
            # Sorted here: asked to return them in sequence, SQLite's planner would rather read the whole
            # table in that order than the processing times' index and sort.
            rows = await tx.fetch(
                "SELECT seq, dedup_key, delivery_id, subject, body, trace FROM events"
                " WHERE status = ? AND processed_at >= ?",
                EventStatus.PROCESSED.value,
                processed_at,
            )
        return [
            StoredEvent(r["seq"], r["dedup_key"], r["delivery_id"], r["subject"], r["body"], _load(r["trace"]))
            for r in sorted(rows, key=lambda r: int(r["seq"]))
        ]

    async def events_about(self, names: Sequence[str], limit: int = 500) -> list[StoredEvent]:
        """The newest `limit` processed events filed under any of `names` (the journal files an event under
        the first login, device, key or address it names), oldest first: a subject's history to replay."""
        if not names:
            return []
        async with self.read() as tx:
            rows = await tx.fetch(
                "SELECT seq, dedup_key, delivery_id, subject, body, trace FROM events"  # noqa: S608 - '?' only
                f" WHERE status = ? AND subject IN ({_marks(len(names))}) ORDER BY seq DESC LIMIT ?",
                EventStatus.PROCESSED.value,
                *names,
                limit,
            )
        return [
            StoredEvent(r["seq"], r["dedup_key"], r["delivery_id"], r["subject"], r["body"], _load(r["trace"]))
            for r in reversed(rows)
        ]

    async def quarantine_event(self, seq: int, at: str, reason: str) -> None:
        """Set an event that does not load aside: kept with its body, out of processing and rebuilds,
        and the reason in the audit trail (ref `event:<seq>`)."""
        async with self.transaction() as tx:
            tx.defer("UPDATE events SET status = ? WHERE seq = ?", EventStatus.QUARANTINED.value, seq)
            tx.defer(
                "INSERT INTO audit (at, actor, kind, ref, detail) VALUES (?, ?, ?, ?, ?)",
                at,
                "responder",
                "event.quarantined",
                f"event:{seq}",
                json.dumps({"reason": reason}, sort_keys=True),
            )

    async def record_outcomes(self, outcomes: Sequence[EventOutcome], processed_at: str) -> list[bool]:
        """Mark events processed together with what each decided, in one transaction, in order (a later
        event's decision may replace an earlier one's); per event, False (and nothing written) if it was
        already processed — by this instance before a crash, or by another one. The processed marks are one
        statement per few hundred events."""
        marked: set[int] = set()
        # Marks alone (what most of a SIEM's alerts decide) are bulk work; a decision may be a cut-off.
        bulk = not any(o.decisions or o.intents or o.replaced for o in outcomes)
        async with self.transaction(bulk=bulk) as tx:
            for seqs in _chunks([o.event_seq for o in outcomes], 400):
                marked.update(await self._mark_processed(tx, seqs, processed_at))
            for o in outcomes:
                if o.event_seq in marked:
                    for sql, args in self._outcome_statements(o):
                        tx.defer(sql, *args)
        return [o.event_seq in marked for o in outcomes]

    async def _mark_processed(self, tx: Tx, seqs: Sequence[int], processed_at: str) -> list[int]:
        """Mark pending events processed: those of `seqs` that were pending (and are marked now)."""
        sql = MARK_PROCESSED.format(marks=_marks(len(seqs)))
        return [int(r[0]) for r in await tx.fetch_values(sql + " RETURNING seq", processed_at, *seqs)]

    async def record_manual(self, decision: DecisionRecord, intents: Sequence[IntentRecord]) -> None:
        """A decision an operator made by hand (no event), with its intents, in one transaction."""
        async with self.transaction() as tx:
            self._insert_decision(tx, decision, None)
            self._insert_intents(tx, intents)

    def _outcome_statements(self, o: EventOutcome) -> list[Statement]:
        """What an event's outcome writes beside its processed mark: replaced decisions, new ones, intents."""
        out = Statements()
        for decision_id in o.replaced:
            out.defer("UPDATE decisions SET state = ? WHERE id = ?", DecisionState.REPLACED.value, decision_id)
        for d in o.decisions:
            self._insert_decision(out, d, o.event_seq)
        self._insert_intents(out, o.intents)
        return out.collected

    def _insert_decision(self, tx: Tx | Statements, d: DecisionRecord, event_seq: int | None) -> None:
        tx.defer(
            "INSERT INTO decisions (id, subject, response, level, state, created_at, expires_at, body,"
            " trace, event_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            d.id,
            d.subject,
            d.response,
            d.level,
            d.state.value,
            d.created_at,
            d.expires_at,
            d.body,
            json.dumps(d.trace),
            event_seq,
        )

    async def reopen_failed_intent(self, intent_id: str, now: str) -> bool:
        """Make a failed intent open again, so that it can be retried."""
        async with self.transaction() as tx:
            changed = await tx.execute(
                "UPDATE intents SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
                IntentState.PENDING.value,
                now,
                intent_id,
                IntentState.FAILED.value,
            )
        return changed > 0

    async def add_intents(self, intents: Sequence[IntentRecord]) -> None:
        async with self.transaction() as tx:
            self._insert_intents(tx, intents)

    def _insert_intents(self, tx: Tx | Statements, intents: Sequence[IntentRecord]) -> None:
        for i in intents:
            tx.defer(
                "INSERT INTO intents (id, decision_id, ordinal, kind, action, state, irreversible, attempts,"
                " created_at, updated_at, trace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                i.id,
                i.decision_id,
                i.ordinal,
                i.kind.value,
                i.action,
                i.state.value,
                i.irreversible,
                1 if i.state is IntentState.RUNNING else 0,  # written claimed: its first try starts now
                i.created_at,
                i.created_at,
                json.dumps(i.trace),
            )

    async def start_intent(self, intent_id: str, now: str) -> StoredIntent | None:
        """Claim an open intent for execution (attempts + 1). None if it is not open any more."""
        async with self.transaction() as tx:
            claimed = await tx.execute(
                "UPDATE intents SET state = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE id = ? AND state IN (?, ?)",
                IntentState.RUNNING.value,
                now,
                intent_id,
                *[s.value for s in _OPEN],
            )
            if not claimed:
                return None
            rows = await tx.fetch("SELECT * FROM intents WHERE id = ?", intent_id)
        return _intent(rows[0])

    async def start_intents(self, intent_ids: Sequence[str], now: str) -> set[str]:
        """`start_intent` for many in one transaction: the ids this caller claimed."""
        claimed: set[str] = set()
        async with self.transaction() as tx:
            for ids in _chunks(list(intent_ids), 400):
                sql = (
                    "UPDATE intents SET state = ?, attempts = attempts + 1, updated_at = ?"  # noqa: S608 - '?' only
                    f" WHERE state IN (?, ?) AND id IN ({_marks(len(ids))}) RETURNING id"
                )
                rows = await tx.fetch(sql, IntentState.RUNNING.value, now, *[s.value for s in _OPEN], *ids)
                claimed.update(str(r["id"]) for r in rows)
        return claimed

    async def finish_intents(self, finished: Sequence[FinishedIntent], now: str) -> None:
        """Record how intents ended, in one transaction (one hub's batch: one fsync, not one each)."""
        if not finished:
            return
        async with self.transaction() as tx:
            for f in finished:
                tx.defer(
                    "UPDATE intents SET state = ?, result = ?, verified = ?, restore = COALESCE(?, restore),"
                    " updated_at = ?, pending_since = CASE WHEN ? THEN COALESCE(pending_since, ?) ELSE NULL END,"
                    " next_try_at = ? WHERE id = ?",
                    f.state.value,
                    f.result,
                    f.verified,
                    f.restore,
                    f.at or now,
                    f.outstanding,
                    now,
                    f.next_try_at,
                    f.intent_id,
                )

    async def intents_in_force(self) -> list[StoredIntent]:
        """What the hubs must show, in the order written: every apply intent of an active decision that
        is not cancelled or refused (verified or not), and every undo not yet verified."""
        async with self.read() as tx:
            rows = await tx.fetch(
                "SELECT i.* FROM intents i JOIN decisions d ON d.id = i.decision_id"
                " WHERE (i.kind = ? AND d.state = ? AND i.state IN (?, ?, ?, ?))"
                " OR (i.kind = ? AND i.state IN (?, ?, ?))"
                " ORDER BY i.created_at, i.decision_id, i.ordinal",
                IntentKind.APPLY.value,
                DecisionState.ACTIVE.value,
                *[s.value for s in (IntentState.PENDING, IntentState.RUNNING, IntentState.DONE, IntentState.FAILED)],
                IntentKind.UNDO.value,
                *[s.value for s in (IntentState.PENDING, IntentState.RUNNING, IntentState.FAILED)],
            )
        return [_intent(r) for r in rows]

    async def claim_intents(
        self, intent_ids: Sequence[str], now: str, *, stale_before: str, attempt: bool = True
    ) -> list[StoredIntent]:
        """Claim intents for another try, as they are now (with `attempt`, attempts + 1): those still to
        converge (an apply of a decision still active, or an undo) that nobody is carrying out. One left
        running since before `stale_before` was a try that never ended (a crash) and is claimed too."""
        claimed: list[StoredIntent] = []
        if not intent_ids:
            return claimed
        async with self.transaction() as tx:
            for ids in _chunks(list(intent_ids), 400):
                sql = (
                    "UPDATE intents SET state = ?, attempts = attempts + ?, updated_at = ?"  # noqa: S608 - '?' only
                    f" WHERE id IN ({_marks(len(ids))})"
                    " AND (state IN (?, ?, ?) OR (state = ? AND updated_at < ?))"
                    " AND (kind = ? OR decision_id IN (SELECT id FROM decisions WHERE state = ?)) RETURNING *"
                )
                rows = await tx.fetch(
                    sql, IntentState.RUNNING.value, 1 if attempt else 0, now, *ids,
                    IntentState.PENDING.value, IntentState.FAILED.value, IntentState.DONE.value,
                    IntentState.RUNNING.value, stale_before, IntentKind.UNDO.value, DecisionState.ACTIVE.value,
                )  # fmt: skip
                claimed += [_intent(r) for r in rows]
        return claimed

    async def outstanding_of(self, decision_ids: Sequence[str]) -> dict[str, int]:
        """Per decision, how many of its actions (and undos) wait for a hub to verify them; absent: none."""
        out: dict[str, int] = {}
        async with self.read() as tx:
            for ids in _chunks(list(decision_ids), 400):
                rows = await tx.fetch(
                    "SELECT decision_id, COUNT(*) AS n FROM intents"  # noqa: S608 - '?' only
                    f" WHERE decision_id IN ({_marks(len(ids))}) AND state IN (?, ?) GROUP BY decision_id",
                    *ids,
                    IntentState.PENDING.value,
                    IntentState.FAILED.value,
                )
                out.update({str(r["decision_id"]): int(r["n"]) for r in rows})
        return out

    async def arrivals(self, decision_ids: Sequence[str]) -> dict[str, str]:
        """When the delivery behind each decision arrived; the decision's own time when the event is no
        longer kept (retention) or there was none (an operator's)."""
        out: dict[str, str] = {}
        async with self.read() as tx:
            for ids in _chunks(list(decision_ids), 400):
                rows = await tx.fetch(
                    "SELECT d.id, COALESCE(dl.received_at, d.created_at) AS arrived FROM decisions d"  # noqa: S608
                    " LEFT JOIN events e ON e.seq = d.event_seq LEFT JOIN deliveries dl ON dl.id = e.delivery_id"
                    f" WHERE d.id IN ({_marks(len(ids))})",
                    *ids,
                )
                out.update({str(r["id"]): str(r["arrived"]) for r in rows})
        return out

    async def plan_next_try(self, intent_ids: Sequence[str], at: str) -> None:
        """Record when outstanding intents are tried next (shown to operators)."""
        if not intent_ids:
            return
        async with self.transaction() as tx:
            for ids in _chunks(list(intent_ids), 400):
                tx.defer(
                    f"UPDATE intents SET next_try_at = ? WHERE id IN ({_marks(len(ids))}) AND state IN (?, ?)",  # noqa: S608
                    at, *ids, IntentState.PENDING.value, IntentState.FAILED.value,
                )  # fmt: skip

    async def cancel_unapplied(self, decision_id: str, now: str) -> list[StoredIntent]:
        """A decision ended: its apply intents not carried out (waiting, outstanding) will never be. Returns
        them (attempts and restore unchanged), so that the caller can take back those that were tried (a try
        whose answer was lost may have taken effect)."""
        async with self.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE intents SET state = ?, next_try_at = NULL, pending_since = NULL, updated_at = ?"
                " WHERE decision_id = ? AND kind = ? AND state IN (?, ?, ?) RETURNING *",
                IntentState.CANCELLED.value,
                now,
                decision_id,
                IntentKind.APPLY.value,
                *[s.value for s in (IntentState.PENDING, IntentState.FAILED, IntentState.AWAITING_APPROVAL)],
            )
        return [_intent(r) for r in rows]

    async def set_intents_state(self, decision_id: str, from_state: IntentState, to_state: IntentState) -> int:
        async with self.transaction() as tx:
            return await tx.execute(
                "UPDATE intents SET state = ? WHERE decision_id = ? AND state = ?",
                to_state.value,
                decision_id,
                from_state.value,
            )

    async def open_intents(self) -> list[StoredIntent]:
        """Intents written but not finished: resumed on start, in the order they were written."""
        async with self.read() as tx:
            rows = await tx.fetch(
                "SELECT * FROM intents WHERE state IN (?, ?) ORDER BY created_at, decision_id, ordinal",
                *[s.value for s in _OPEN],
            )
        return [_intent(r) for r in rows]

    async def intents_for(self, decision_id: str) -> list[StoredIntent]:
        async with self.read() as tx:
            rows = await tx.fetch("SELECT * FROM intents WHERE decision_id = ? ORDER BY kind, ordinal", decision_id)
        return [_intent(r) for r in rows]

    async def intent(self, intent_id: str) -> StoredIntent | None:
        async with self.read() as tx:
            rows = await tx.fetch("SELECT * FROM intents WHERE id = ?", intent_id)
        return _intent(rows[0]) if rows else None

    async def decision(self, decision_id: str) -> DecisionRecord | None:
        async with self.read() as tx:
            rows = await tx.fetch("SELECT * FROM decisions WHERE id = ?", decision_id)
        return _decision(rows[0]) if rows else None

    async def decisions(self, state: DecisionState | None = None, limit: int = 100) -> list[DecisionRecord]:
        async with self.read() as tx:
            if state is None:
                rows = await tx.fetch("SELECT * FROM decisions ORDER BY created_at DESC LIMIT ?", limit)
            else:
                rows = await tx.fetch(
                    "SELECT * FROM decisions WHERE state = ? ORDER BY created_at DESC LIMIT ?",
                    state.value,
                    limit,
                )
        return [_decision(r) for r in rows]

    async def live_decisions(self, subject: str) -> list[DecisionRecord]:
        """The subject's decisions in force or waiting for approval (what a new decision replaces)."""
        async with self.read() as tx:
            rows = await tx.fetch(
                "SELECT * FROM decisions WHERE subject = ? AND state IN (?, ?) ORDER BY created_at",
                subject,
                DecisionState.ACTIVE.value,
                DecisionState.AWAITING_APPROVAL.value,
            )
        return [_decision(r) for r in rows]

    async def expired_decisions(self, now: float, limit: int = 100) -> list[DecisionRecord]:
        """Active decisions whose TTL has passed."""
        async with self.read() as tx:
            rows = await tx.fetch(
                "SELECT * FROM decisions WHERE state = ? AND expires_at IS NOT NULL AND expires_at <= ?"
                " ORDER BY expires_at LIMIT ?",
                DecisionState.ACTIVE.value,
                now,
                limit,
            )
        return [_decision(r) for r in rows]

    async def set_expiry(self, decision_id: str, expires_at: float | None) -> None:
        async with self.transaction() as tx:
            tx.defer("UPDATE decisions SET expires_at = ? WHERE id = ?", expires_at, decision_id)

    async def count_decisions(self, state: DecisionState) -> int:
        async with self.read() as tx:
            rows = await tx.fetch("SELECT COUNT(*) AS n FROM decisions WHERE state = ?", state.value)
        return int(rows[0]["n"])

    async def transition_decision(
        self, decision_id: str, from_states: Sequence[DecisionState], to_state: DecisionState
    ) -> bool:
        """Compare-and-set: move a decision on only from one of the expected states."""
        marks = ", ".join("?" for _ in from_states)
        async with self.transaction() as tx:
            changed = await tx.execute(
                f"UPDATE decisions SET state = ? WHERE id = ? AND state IN ({marks})",  # noqa: S608 - only '?' marks
                to_state.value,
                decision_id,
                *[s.value for s in from_states],
            )
        return changed > 0

    async def source_state(self, source: str) -> dict[str, Any] | None:
        """What a pull source saved to resume from (its cursor, subscription ids, delta links), or None
        before its first save."""
        async with self.read() as tx:
            rows = await tx.fetch("SELECT state FROM source_state WHERE source = ?", source)
        if not rows:
            return None
        state: dict[str, Any] = json.loads(rows[0]["state"])
        return state

    async def save_source_state(self, source: str, state: Mapping[str, object], at: str) -> None:
        """Replace a pull source's saved state. A source saves only after the events it read are accepted
        (`accept_batch`), so a crash between the two reads them again, and their dedup keys drop them."""
        async with self.transaction() as tx:
            tx.defer(
                "INSERT INTO source_state (source, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (source) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                source,
                json.dumps(state, sort_keys=True),
                at,
            )

    async def audit(self, at: str, actor: str, kind: str, ref: str, detail: Mapping[str, object]) -> None:
        async with self.transaction() as tx:
            tx.defer(
                "INSERT INTO audit (at, actor, kind, ref, detail) VALUES (?, ?, ?, ?, ?)",
                at,
                actor,
                kind,
                ref,
                json.dumps(detail, sort_keys=True, default=str),
            )

    async def use_once(self, key: str, at: str, keep_until: str) -> bool:
        """Record the use of something good once (an approval link's nonce, a Slack request's signature):
        True the first time, False ever after. The primary key decides, so two instances cannot both.
        `keep_until`: when the thing could no longer be used anyway (its expiry); retention keeps it till then."""
        async with self.transaction() as tx:
            changed = await tx.execute(
                "INSERT INTO used_once (key, used_at, keep_until) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
                key, at, keep_until,
            )  # fmt: skip
        return changed > 0

    async def audit_trail(self, ref: str | None = None, limit: int = 1000) -> list[AuditEntry]:
        async with self.read() as tx:
            if ref is None:
                rows = await tx.fetch("SELECT * FROM audit ORDER BY seq LIMIT ?", limit)
            else:
                rows = await tx.fetch("SELECT * FROM audit WHERE ref = ? ORDER BY seq LIMIT ?", ref, limit)
        return [AuditEntry(r["seq"], r["at"], r["actor"], r["kind"], r["ref"], r["detail"]) for r in rows]

    async def prune(self, *, events_before: str, decisions_before: str, batch: int = 2000) -> dict[str, int]:
        """Delete what retention no longer keeps, and say how many rows of each table went: events processed
        before `events_before`, deliveries received before it with no event left; ended decisions created
        before `decisions_before` with their intents, and audit entries written before it (the records a
        batch lost, `record.rejected`, already with the deliveries, before `events_before`). Pending events
        and live decisions are never deleted. One transaction per `batch` rows, so that intake waits for
        one short one at a time, never for the whole prune."""
        ended, unsettled = [s.value for s in _ENDED], [s.value for s in _UNSETTLED]
        steps = (
            # What a batch lost goes with the deliveries' retention, not the audit trail's: a flood of
            # unusable records must not stay for the audit trail's 400 days.
            ("audit", "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE kind = ? AND at < ? LIMIT ?)",
             ("record.rejected", events_before)),
            ("events", "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE status = ?"
                       " AND processed_at < ? LIMIT ?)", (EventStatus.PROCESSED.value, events_before)),
            ("deliveries", "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d WHERE d.received_at < ?"
                           " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id) LIMIT ?)",
             (events_before,)),
            ("audit", "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE at < ? LIMIT ?)",
             (decisions_before,)),
            # A message delivered or given up is history the audit trail and the channel keep: it goes with
            # the events. One still pending stays, however old, until it is sent or given up.
            ("notifications", "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
                              " WHERE state <> ? AND created_at < ? LIMIT ?)", ("pending", events_before)),
            # A used link or Slack signature only needs remembering until it would have expired anyway.
            ("used_once", "DELETE FROM used_once WHERE key IN (SELECT key FROM used_once WHERE keep_until < ? LIMIT ?)",
             (events_before,)),
        )  # fmt: skip
        pruned = {
            "events": 0, "deliveries": 0, "decisions": 0, "intents": 0, "audit": 0, "notifications": 0, "used_once": 0,
        }  # fmt: skip
        for table, sql, args in steps:
            while True:
                async with self.transaction() as tx:
                    gone = await tx.execute(sql, *args, batch)
                pruned[table] += gone
                if gone < batch:
                    break
        ended_before = (
            "SELECT d.id FROM decisions d WHERE d.created_at < ? AND d.state IN (?, ?, ?, ?) AND NOT EXISTS"
            " (SELECT 1 FROM intents i WHERE i.decision_id = d.id AND i.state IN (?, ?, ?, ?)) LIMIT ?"
        )
        while True:
            async with self.transaction() as tx:
                ids = [str(r["id"]) for r in await tx.fetch(ended_before, decisions_before, *ended, *unsettled, batch)]
                if ids:
                    marks = _marks(len(ids))
                    pruned["intents"] += await tx.execute(f"DELETE FROM intents WHERE decision_id IN ({marks})", *ids)  # noqa: S608 - '?' only
                    pruned["decisions"] += await tx.execute(f"DELETE FROM decisions WHERE id IN ({marks})", *ids)  # noqa: S608 - '?' only
            if len(ids) < batch:
                break
        return pruned

    async def counts(self) -> dict[str, int]:
        """Row counts by table and state: for readiness, metrics and consistency checks."""
        out: dict[str, int] = {}
        async with self.transaction() as tx:
            for table, column in (("events", "status"), ("decisions", "state"), ("intents", "state")):
                sql = f"SELECT {column} AS s, COUNT(*) AS n FROM {table} GROUP BY {column}"  # noqa: S608 - fixed names
                for row in await tx.fetch(sql):
                    out[f"{table}.{row['s']}"] = int(row["n"])
        return out
