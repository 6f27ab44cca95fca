"""What a rules change would alter: two policies run on the same events, their decisions compared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from responder.core.engine import Engine
from responder.core.events import Event
from responder.core.identity import IdentityMap
from responder.core.rules import RuleSet


@dataclass(frozen=True, slots=True)
class DecisionChange:
    """On `event_id`, `subject` got `old` under the old rules and `new` under the new (None: no decision)."""

    event_id: str
    subject: str
    old: str | None
    new: str | None


def _decided(rules: RuleSet, identity: IdentityMap, events: Sequence[Event]) -> dict[tuple[str, str], str]:
    engine = Engine(rules, identity)
    return {(d.event_id, d.subject): d.response for e in events for d in engine.process(e).decisions}


def decision_changes(
    old: RuleSet, new: RuleSet, identity: IdentityMap, events: Sequence[Event]
) -> list[DecisionChange]:
    """Each decision that differs, in the events' order: each policy runs on `events` from a fresh engine
    (no risk before the first event), so a change shows where it first alters a decision and after."""
    before, after = _decided(old, identity, events), _decided(new, identity, events)
    order = {e.id: i for i, e in enumerate(events)}
    keys = sorted(before.keys() | after.keys(), key=lambda k: (order.get(k[0], len(order)), k[1]))
    return [
        DecisionChange(event_id, subject, before.get((event_id, subject)), after.get((event_id, subject)))
        for event_id, subject in keys
        if before.get((event_id, subject)) != after.get((event_id, subject))
    ]
