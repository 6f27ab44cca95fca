"""The journal: durable record of deliveries, events, decisions, action intents and the audit trail."""

from __future__ import annotations

from pathlib import Path

from responder.journal.base import SqlJournal
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
    Intent,
    IntentKind,
    IntentRecord,
    IntentState,
    Lane,
    RejectedRecord,
    StoredEvent,
    StoredIntent,
)

Journal = SqlJournal


async def open_journal(url: str) -> Journal:
    """`sqlite:///ABSOLUTE/PATH` or `sqlite:RELATIVE/PATH` (embedded), `postgresql://...` (shared)."""
    if url.startswith(("postgresql://", "postgres://")):
        from responder.journal.postgres import PostgresJournal  # noqa: PLC0415 - asyncpg only when used

        return await PostgresJournal.open(url)
    if url.startswith("sqlite:"):
        from responder.journal.sqlite import SqliteJournal  # noqa: PLC0415

        path = url.removeprefix("sqlite:")
        path = "/" + path.lstrip("/") if path.startswith("///") else path.removeprefix("//")
        return await SqliteJournal.open(Path(path))
    raise ValueError(f"journal URL {url!r}: expected sqlite:///PATH or postgresql://...")


__all__ = [
    "Accepted",
    "AuditEntry",
    "Availability",
    "DecisionRecord",
    "DecisionState",
    "DeliveryRecord",
    "EventOutcome",
    "EventRecord",
    "EventStatus",
    "FinishedIntent",
    "Intent",
    "IntentKind",
    "IntentRecord",
    "IntentState",
    "Journal",
    "JournalUnavailable",
    "Lane",
    "RejectedRecord",
    "StoredEvent",
    "StoredIntent",
    "open_journal",
]
