"""What the journal stores: deliveries, events, decisions, action intents and the audit trail.

Bodies are JSON text: the journal does not interpret domain objects, the service does. Times are
passed in by the caller (ISO 8601 text for ordering and reading, epoch seconds for expiry). `Intent`
is the one record that carries a domain object: a journaled action as the executor carries it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from responder.core.actions import Action


class EventStatus(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    QUARANTINED = "quarantined"  # stored but unreadable: kept for inspection, never decided on or replayed


class DecisionState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    ACTIVE = "active"
    EXPIRED = "expired"
    UNDONE = "undone"
    REPLACED = "replaced"
    DRY_RUN = "dry_run"
    REJECTED = "rejected"


class IntentState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # the hub answered with an error; retried while the decision is in force
    CANCELLED = "cancelled"
    REFUSED = "refused"  # never attempted and never will be: a protected target, or no such hub


class Lane(IntEnum):
    """Which pending events the pipeline takes first: urgent ones (a webhook's, or high severity from any
    source) before a bulk backlog, never ahead of an earlier event of their own subject."""

    URGENT = 0
    BULK = 1


class IntentKind(StrEnum):
    APPLY = "apply"
    UNDO = "undo"


MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record of a batch delivery (an Okta LogEvent, a Graph notification) that became no event: which
    one (`index` in the batch, its own id when it has one) and why. The delivery's body keeps the record."""

    index: int
    reason: str
    record_id: str | None = None

    def __post_init__(self) -> None:
        # A reason may quote what was sent (a time that does not parse): bounded, as what it names is.
        object.__setattr__(self, "reason", self.reason[:MAX_REASON])
        if self.record_id is not None:
            object.__setattr__(self, "record_id", self.record_id[:256])


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: str
    source: str
    received_at: str
    trace: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    rejected: tuple[RejectedRecord, ...] = ()  # stored in the audit trail, kind `record.rejected`


@dataclass(frozen=True, slots=True)
class EventRecord:
    dedup_key: str
    subject: str
    occurred_at: str
    body: str
    lane: Lane = Lane.BULK


@dataclass(frozen=True, slots=True)
class Accepted:
    """Per event of a delivery: its sequence number, or None when it was a duplicate."""

    seqs: tuple[int | None, ...]

    @property
    def new(self) -> int:
        return sum(s is not None for s in self.seqs)

    @property
    def duplicates(self) -> int:
        return sum(s is None for s in self.seqs)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    dedup_key: str
    delivery_id: str
    subject: str
    body: str
    trace: dict[str, str]
    received_at: str = ""
    lane: Lane = Lane.BULK


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecord:
    id: str
    subject: str
    response: str
    level: int
    state: DecisionState
    created_at: str
    expires_at: float | None
    body: str
    trace: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IntentRecord:
    id: str
    decision_id: str
    ordinal: int
    kind: IntentKind
    action: str
    state: IntentState
    irreversible: bool
    created_at: str
    trace: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Intent:
    """One journaled action to carry out; `id` is what `act restore` takes. `trace` is the trace context
    of the delivery that caused it, so that its hub operations join that trace."""

    id: str
    action: Action
    trace: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredIntent:
    id: str
    decision_id: str
    ordinal: int
    kind: IntentKind
    action: str
    state: IntentState
    irreversible: bool
    attempts: int
    result: str | None
    verified: bool | None
    restore: str | None
    created_at: str
    updated_at: str
    trace: dict[str, str]
    pending_since: str | None = None
    """Since when its effect has been outstanding (first attempt not verified); None once verified."""
    next_try_at: str | None = None
    """When the next try is planned, while it is outstanding."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    kind: str
    ref: str
    detail: str


@dataclass(frozen=True, slots=True)
class FinishedIntent:
    intent_id: str
    state: IntentState
    result: str
    verified: bool | None
    restore: str | None = None
    at: str | None = None  # when it was verified, if not now
    next_try_at: str | None = None  # while outstanding: when the next try is planned

    @property
    def outstanding(self) -> bool:
        """Still to converge: its effect is not verified, and it will be tried again."""
        return self.state in (IntentState.PENDING, IntentState.FAILED)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What processing one event decided, to be written with its processed mark."""

    event_seq: int
    decisions: Sequence[DecisionRecord] = ()
    intents: Sequence[IntentRecord] = ()
    replaced: Sequence[str] = ()
