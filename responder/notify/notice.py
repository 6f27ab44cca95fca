"""A notice: one thing people should hear about (a decision made, enforced, waiting, undone, ...).

Whoever sees it happen emits it (`Notices.emit`), which never blocks and never fails: delivery is the
notifier's job, journaled and retried apart from enforcement, so a channel that is down costs nothing but
its own messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class NoticeKind(StrEnum):
    DECIDED = "decided"
    ENFORCED = "enforced"  # every action verified on its hub (or some not: `detail["unverified"]`)
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    UNDONE = "undone"
    EXPIRED = "expired"
    LIFTED = "lifted"  # taken back by the policy (a person reactivated)
    DRIFT = "drift"  # a hub had lost an action in force; re-asserted
    ENFORCEMENT_OFF = "enforcement_off"  # breaker tripped, or a hub not answering
    ESCALATED = "escalated"  # an approval not given in time, sent on to the next channel


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    at: datetime
    subject: str  # user:alice@example.com, peer:admin1, hub:hub1 (enforcement_off)
    decision_id: str | None = None
    response: str | None = None  # cut-off, quarantine, offboard, ...
    actor: str | None = None  # the verified operator, or policy:..., or responder
    detail: Mapping[str, object] = field(default_factory=dict)
    channels: tuple[str, ...] = ()  # only these channels (an escalation); empty: the routes decide


class Notices(Protocol):
    def emit(self, notice: Notice) -> None:
        """Queue the notice for delivery; returns at once, whatever the channels are doing."""
        ...


class NoNotices:
    """Where nothing is configured to notify."""

    def emit(self, notice: Notice) -> None:
        return None
