"""The notification outbox: every message to send, in the journal (table `notifications`), until a
channel takes it or it is given up. What was not sent when the service stopped is sent after it starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from responder.journal import Journal


class OutboxState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # given up: refused for good, or out of attempts


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for one channel. `body`: the rendered message (JSON)."""

    id: str
    channel: str
    kind: str
    decision_id: str | None
    body: str
    attempts: int = 0


class Outbox:
    """The journal's `notifications` table, for one instance (`owner`): several instances sharing a
    PostgreSQL journal each deliver what they queued."""

    def __init__(self, journal: Journal, owner: str) -> None:
        self._journal = journal
        self._owner = owner

    async def add(self, items: Sequence[Outgoing], now: float, created_at: str) -> None:
        """Store messages as due now, in one transaction."""
        if not items:
            return
        async with self._journal.transaction() as tx:
            for o in items:
                tx.defer(
                    "INSERT INTO notifications (id, owner, channel, kind, decision_id, body, state, attempts,"
                    " next_try_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT (id) DO NOTHING",
                    o.id, self._owner, o.channel, o.kind, o.decision_id, o.body, OutboxState.PENDING.value, now,
                    created_at,
                )  # fmt: skip

    async def due(self, channel: str, now: float, limit: int = 20) -> list[Outgoing]:
        """The channel's pending messages whose time has come, oldest first."""
        async with self._journal.read() as tx:
            rows = await tx.fetch(
                "SELECT id, channel, kind, decision_id, body, attempts FROM notifications"
                " WHERE state = ? AND owner = ? AND channel = ? AND next_try_at <= ?"
                " ORDER BY id LIMIT ?",
                OutboxState.PENDING.value, self._owner, channel, now, limit,
            )  # fmt: skip
        return [Outgoing(r["id"], r["channel"], r["kind"], r["decision_id"], r["body"], r["attempts"]) for r in rows]

    async def next_due(self, channel: str) -> float | None:
        """When the channel's next pending message is due, if it has one."""
        async with self._journal.read() as tx:
            rows = await tx.fetch(
                "SELECT MIN(next_try_at) AS due_at FROM notifications WHERE state = ? AND owner = ? AND channel = ?",
                OutboxState.PENDING.value, self._owner, channel,
            )  # fmt: skip
        at = rows[0]["due_at"] if rows else None
        return None if at is None else float(at)

    async def settle(self, item: Outgoing, state: OutboxState, error: str | None = None) -> None:
        async with self._journal.transaction() as tx:
            tx.defer(
                "UPDATE notifications SET state = ?, attempts = ?, last_error = ? WHERE id = ?",
                state.value, item.attempts + 1, error, item.id,
            )  # fmt: skip

    async def retry_at(self, item: Outgoing, at: float, error: str) -> None:
        async with self._journal.transaction() as tx:
            tx.defer(
                "UPDATE notifications SET attempts = ?, next_try_at = ?, last_error = ? WHERE id = ?",
                item.attempts + 1, at, error, item.id,
            )  # fmt: skip

    async def states(self) -> dict[str, int]:
        """How many messages are in each state (for tests and the admin view)."""
        async with self._journal.read() as tx:
            rows = await tx.fetch(
                "SELECT state, COUNT(*) AS n FROM notifications WHERE owner = ? GROUP BY state", self._owner
            )
        return {r["state"]: int(r["n"]) for r in rows}
