"""Conditions hand CEL only the part of the context an expression reads; they must decide exactly as
with the whole context, for every condition of the shipped policy and for the forms that are easy to
get wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cel
import pytest

from responder.core.conditions import Condition, uses
from responder.policy import load_rules

RULES = load_rules([Path(__file__).resolve().parents[2] / "rules"])
SHIPPED = sorted(
    {c.source for r in (*RULES.signals, *RULES.responses) for c in (r.when, getattr(r, "approval_when", None)) if c}
)
TRICKY = [
    "event.severity >= 3",
    "event . type == 'user.session.start'",
    "event.type.startsWith('user.')",
    "size(event) == 10",
    "event['type'] == 'user.session.start'",
    "'type' in event && event.product == ''",
    "has(event.attributes.rule) && event.attributes.rule.level >= 10",
    "event.users.exists(u, u.endsWith('@example.com')) && size(subject.peers) > 0",
    "subject.peers.exists(p, p.sets.exists(s, s == 'admin_devices'))",
    "subject == {} || subject.kind == 'user'",
    "'mfa-reset' in signals && score >= 50.0",
    "signals.exists(event, event == 'mfa-reset')",
    "[event.severity, event.severity_name].size() == 2",
    "event.attributes.missing == 1",
    "has(event.nothing)",
]
EVENT: dict[str, Any] = {
    "id": "e1", "source": "okta", "product": "", "type": "user.session.start", "severity": 3,
    "severity_name": "high", "users": ["alice@example.com"], "devices": [], "addresses": ["10.100.0.10"],
    "attributes": {"rule": {"id": "5712", "level": 12}, "debugContext": {"debugData": {"risk": "{level=HIGH}"}}},
}  # fmt: skip
PEER = {"name": "admin1", "hub": "hub1", "tunnel_ip": "10.100.0.10", "sets": ["admin_devices"]}
SUBJECT = {"key": "user:alice@example.com", "kind": "user", "peers": [PEER]}
CONTEXTS = [
    {"event": EVENT, "subject": SUBJECT, "signals": ["mfa-reset"], "score": 80.0},
    {"event": EVENT | {"severity": 0, "attributes": {}}, "subject": SUBJECT, "signals": []},
    {"event": EVENT | {"type": "other", "users": ["x@example.org"]}, "subject": {}, "signals": ["other"], "score": 1.0},
]


def _whole(source: str, context: dict[str, Any]) -> bool:
    try:
        return cel.compile(source).execute(context) is True
    except Exception:  # the contract: a condition that cannot be evaluated does not hold
        return False


@pytest.mark.parametrize("source", SHIPPED + TRICKY)
def test_a_condition_decides_as_it_would_with_the_whole_context(source: str) -> None:
    condition = Condition(source)
    answers = [condition.holds(c) for c in CONTEXTS]
    assert answers == [_whole(source, c) for c in CONTEXTS]


def test_the_policy_has_conditions_to_check() -> None:
    assert len(SHIPPED) >= 3


def test_the_tricky_forms_do_not_all_agree_by_being_false() -> None:
    # Otherwise the comparison above would prove nothing.
    assert sum(Condition(s).holds(CONTEXTS[0]) for s in TRICKY) >= 8


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.severity >= 3", {"event": frozenset({"severity"})}),
        ("event . type == 'a' && event.attributes.x.y == 1", {"event": frozenset({"type", "attributes"})}),
        ("size(event) > 2", {"event": None}),
        ("event['type'] == 'x'", {"event": None}),
        ("event.?attributes.x == 1", {"event": None}),
        ("subject.peers.exists(p, p.sets.exists(s, s == 'admin'))", {"subject": frozenset({"peers"})}),
        ("score > 10.0 && 'mfa' in signals", {"score": None, "signals": None}),
        ("true", {}),
    ],
)
def test_what_an_expression_reads(source: str, expected: dict[str, frozenset[str] | None]) -> None:
    found = {k: v for k, v in uses(source).items() if k in {"event", "subject", "signals", "score"}}
    assert found == expected
