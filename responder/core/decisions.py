"""Decisions are data: who, which response, why (each signal's contribution), and exactly what to do."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from responder.core.actions import Action, ActionType
from responder.core.approvals import ApprovalTimeout
from responder.core.identifiers import WireGuardKey
from responder.core.risk import Contribution


@dataclass(frozen=True, slots=True)
class Decision:
    id: str
    subject: str
    response: str
    level: int
    score: float
    contributions: tuple[Contribution, ...]
    actions: tuple[Action, ...]
    requires_approval: bool
    ttl_s: int | None
    dry_run: bool
    event_id: str
    at: float
    replaces: str | None = None
    notes: tuple[str, ...] = ()
    approval_timeout: ApprovalTimeout | None = None

    def to_dict(self) -> dict[str, Any]:
        # Only when there is one: the bodies of decisions without a timeout stay as they were.
        timeout = {"approval_timeout": self.approval_timeout.to_dict()} if self.approval_timeout else {}
        return timeout | {
            "id": self.id,
            "subject": self.subject,
            "response": self.response,
            "level": self.level,
            "score": self.score,
            "contributions": [{"rule": c.rule_id, "points": c.points, "reason": c.reason} for c in self.contributions],
            "actions": [action_to_dict(a) for a in self.actions],
            "requires_approval": self.requires_approval,
            "ttl_s": self.ttl_s,
            "dry_run": self.dry_run,
            "event_id": self.event_id,
            "at": self.at,
            "replaces": self.replaces,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(
            id=data["id"],
            subject=data["subject"],
            response=data["response"],
            level=data["level"],
            score=data["score"],
            contributions=tuple(Contribution(c["rule"], c["points"], c["reason"]) for c in data["contributions"]),
            actions=tuple(action_from_dict(a) for a in data["actions"]),
            requires_approval=data["requires_approval"],
            ttl_s=data["ttl_s"],
            dry_run=data["dry_run"],
            event_id=data["event_id"],
            at=data["at"],
            replaces=data.get("replaces"),
            notes=tuple(data.get("notes", ())),
            approval_timeout=ApprovalTimeout.from_dict(data["approval_timeout"])
            if data.get("approval_timeout")
            else None,
        )


@dataclass(frozen=True, slots=True)
class SubjectExplanation:
    """What one event did to one subject, and why a response did or did not follow."""

    subject: str
    score: float
    contributions: tuple[Contribution, ...]
    matched: tuple[str, ...]
    decision: str | None
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Lift:
    """The policy takes back `subject`'s live decisions of `response`: `signal` (a response's `lifted_by`)
    fired on event `event_id`, saying the reason for them is gone (a person reactivated in the IdP). The
    engine only says so; the service undoes what the journal holds, as an operator's undo would."""

    subject: str
    response: str
    signal: str
    event_id: str
    reason: str

    @property
    def actor(self) -> str:
        """Who the undo is attributed to in the audit log."""
        return f"policy:{self.signal} (event {self.event_id})"


@dataclass(frozen=True, slots=True)
class Outcome:
    event_id: str
    decisions: tuple[Decision, ...]
    explanations: tuple[SubjectExplanation, ...]
    refused: tuple[str, ...] = ()  # subjects not tracked: the engine was at its limit of subjects
    lifts: tuple[Lift, ...] = ()  # carried out before `decisions`, which the event decided after them


def action_to_dict(action: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"type": action.type.value, "hub": action.hub}
    if action.address is not None:
        out["address"] = str(action.address)
    if action.set_name is not None:
        out["set"] = action.set_name
    if action.peer_key is not None:
        out["peer_key"] = str(action.peer_key)
    if action.ttl_s is not None:
        out["ttl_s"] = action.ttl_s
    return out


def action_from_dict(data: dict[str, Any]) -> Action:
    return Action(
        type=ActionType(data["type"]),
        hub=data["hub"],
        address=ipaddress.ip_address(data["address"]) if data.get("address") else None,
        set_name=data.get("set"),
        peer_key=WireGuardKey(data["peer_key"]) if data.get("peer_key") else None,
        ttl_s=data.get("ttl_s"),
    )
