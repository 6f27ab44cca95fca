"""What happens to a decision nobody approved in time: pure, the time is a parameter.

A response may say how long its decisions wait for a human (`approval_timeout`) and what then: `reject`
or `approve` them on the policy's authority, or `escalate`: tell a second channel, wait as long again,
and reject if still nobody answered. Rejecting is the fallback because a decision that needed a human
was judged too risky to take alone; an escalation nobody answers must not turn into an action.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

TIMEOUT_ACTOR = "policy:approval-timeout"  # who the audit trail says acted when the clock decided


class OnTimeout(StrEnum):
    REJECT = "reject"
    ESCALATE = "escalate"
    APPROVE = "approve"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalTimeout:
    """A response's approval timeout, carried in each of its decisions (a reload does not change what a
    waiting decision was promised)."""

    after_s: int
    then: OnTimeout
    escalate_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"after_s": self.after_s, "then": self.then.value, "escalate_to": self.escalate_to}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApprovalTimeout:
        return cls(after_s=int(data["after_s"]), then=OnTimeout(data["then"]), escalate_to=data.get("escalate_to"))


def timeout_step(
    timeout: ApprovalTimeout, waiting_since: float, escalated_at: float | None, now: float
) -> OnTimeout | None:
    """What to do now with a decision waiting since `waiting_since` (escalated at `escalated_at`, if it was):
    nothing yet (None), or reject, approve or escalate it."""
    if escalated_at is not None:
        return OnTimeout.REJECT if now - escalated_at >= timeout.after_s else None
    if now - waiting_since < timeout.after_s:
        return None
    return timeout.then
