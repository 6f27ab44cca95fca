"""Notices about a decision, from what the journal keeps of it (its body holds the explanation: score,
the rules that contributed and their points, the actions)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from responder.core.decisions import action_from_dict
from responder.notify.notice import Notice, NoticeKind

if TYPE_CHECKING:
    from responder.executor import IntentOutcome
    from responder.journal import DecisionRecord


def decision_notice(
    kind: NoticeKind,
    *,
    at: datetime,
    decision_id: str,
    subject: str,
    response: str,
    body: str | Mapping[str, Any],
    state: str | None = None,
    actor: str | None = None,
    channels: tuple[str, ...] = (),
    **detail: object,
) -> Notice:
    """A notice of `kind` about the decision whose journaled `body` (JSON text or its dict) is given;
    `detail` adds to what the body says (hubs verified, a reason); `channels`: only these (an escalation)."""
    data: Mapping[str, Any] = json.loads(body) if isinstance(body, str) else body
    about: dict[str, object] = {
        "score": data.get("score"),
        "contributions": data.get("contributions", []),
        "actions": _described(data.get("actions", [])),
    }
    if state is not None:
        about["state"] = state
    return Notice(
        kind=kind, at=at, subject=subject, decision_id=decision_id, response=response, actor=actor,
        detail={k: v for k, v in (about | detail).items() if v is not None}, channels=channels,
    )  # fmt: skip


def _described(actions: object) -> list[str]:
    out: list[str] = []
    if isinstance(actions, list):
        for a in actions:
            try:
                out.append(action_from_dict(a).describe())
            except (KeyError, TypeError, ValueError):
                out.append(str(a))
    return out


def enforced_notices(
    outcomes: Sequence[IntentOutcome], decided: Mapping[str, DecisionRecord], at: datetime, actor: str = "policy"
) -> list[Notice]:
    """One `enforced` notice per decision, saying per hub whether every action there was verified."""
    hubs: dict[str, dict[str, bool]] = {}
    for o in outcomes:
        decision_id = o.intent_id.rsplit(".", 1)[0]
        by_hub = hubs.setdefault(decision_id, {})
        by_hub[o.result.action.hub] = by_hub.get(o.result.action.hub, True) and o.result.ok and o.result.verified
    notices = []
    for decision_id, by_hub in hubs.items():
        if (record := decided.get(decision_id)) is None:
            continue
        notices.append(
            decision_notice(
                NoticeKind.ENFORCED,
                at=at,
                decision_id=record.id,
                subject=record.subject,
                response=record.response,
                body=record.body,
                state="active",
                actor=actor,
                hubs=by_hub,
                verified=all(by_hub.values()),
            )
        )
    return notices
