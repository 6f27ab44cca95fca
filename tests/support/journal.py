"""One-at-a-time forms of the journal's batch writes, for tests that set up or walk through its state
step by step (the service itself only writes in batches)."""

from __future__ import annotations

from collections.abc import Sequence

from responder.journal import (
    Accepted,
    DecisionRecord,
    DeliveryRecord,
    EventOutcome,
    EventRecord,
    FinishedIntent,
    IntentRecord,
    IntentState,
    Journal,
)


async def accept(journal: Journal, delivery: DeliveryRecord, events: Sequence[EventRecord], owner: str) -> Accepted:
    """`Journal.accept_batch` for one delivery."""
    (accepted,) = await journal.accept_batch([(delivery, events)], owner)
    return accepted


async def record_outcome(
    journal: Journal,
    event_seq: int,
    processed_at: str,
    decisions: Sequence[DecisionRecord],
    intents: Sequence[IntentRecord],
    replaced: Sequence[str] = (),
) -> bool:
    """`Journal.record_outcomes` for one event: False (and nothing written) if it was already processed."""
    (written,) = await journal.record_outcomes([EventOutcome(event_seq, decisions, intents, replaced)], processed_at)
    return written


async def finish_intent(
    journal: Journal,
    intent_id: str,
    now: str,
    *,
    state: IntentState,
    result: str,
    verified: bool | None,
    restore: str | None = None,
) -> None:
    """`Journal.finish_intents` for one intent."""
    await journal.finish_intents([FinishedIntent(intent_id, state, result, verified, restore)], now)
