"""Properties of the decision engine, over arbitrary event sequences."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from responder.core.engine import Engine
from responder.core.events import Event, Severity, Source, Subjects
from responder.core.identity import IdentityMap
from responder.core.rules import PolicySettings, RuleSet, SignalRule
from responder.inventory import Inventory
from responder.policy import load_rules

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
RULES = load_rules([RULES_DIR])
INVENTORY = Inventory.load(RULES_DIR / "tests" / "inventory.yaml")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
USERS = ["alice@example.com", "bob@example.com", "svc-app@example.com", "breakglass@example.com", "eve@example.org"]
ADDRESSES = ["10.100.0.10", "10.100.0.20", "10.100.0.30", "10.100.0.40", "10.100.0.1", "198.18.0.2", "203.0.113.7"]
TYPES = sorted({(s.source.value if s.source else "siem", t) for s in RULES.signals for t in (s.types or {"any"})})


def _key(name: str) -> str:
    return base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()


@st.composite
def events(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 25))
    out, t = [], T0
    for i in range(n):
        source, type_ = draw(st.sampled_from(TYPES))
        t += timedelta(seconds=draw(st.integers(0, 7200)))
        out.append(
            Event(
                id=f"e{i}",
                source=Source(source),
                type=type_,
                time=t,
                subjects=Subjects(
                    users=tuple(draw(st.lists(st.sampled_from(USERS), max_size=2))),
                    addresses=tuple(draw(st.lists(st.sampled_from(ADDRESSES), max_size=2))),
                    keys=tuple(draw(st.lists(st.sampled_from([_key("admin1"), _key("breakglass1")]), max_size=1))),
                ),
                severity=draw(st.sampled_from(list(Severity))),
                attributes=draw(
                    st.sampled_from(
                        [{}, {"change_type": "revoke"}, {"debugContext": {"debugData": {"risk": "New Device"}}}]
                    )
                ),
                dedup_key=f"e{i}",
            )
        )
    return out


def _run(seq: list[Event]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    engine = Engine(RULES, IdentityMap(INVENTORY))
    return [
        (d.id, d.subject, d.response, tuple(sorted(str(a) for a in d.actions)))
        for e in seq
        for d in engine.process(e).decisions
    ]


@settings(max_examples=300, deadline=None)
@given(events())
def test_decisions_are_deterministic(seq: list[Event]) -> None:
    assert _run(seq) == _run(seq)


@settings(max_examples=300, deadline=None)
@given(events())
def test_protected_subjects_never_receive_an_action(seq: list[Event]) -> None:
    engine = Engine(RULES, IdentityMap(INVENTORY))
    breakglass_key = _key("breakglass1")
    for event in seq:
        for decision in engine.process(event).decisions:
            assert decision.subject != "user:breakglass@example.com"
            for action in decision.actions:
                assert str(action.address) not in {"10.100.0.1", "198.18.0.2", "10.100.0.40"}
                assert str(action.peer_key) != breakglass_key


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3600), min_size=1, max_size=40), st.floats(1, 50), st.floats(1, 200))
def test_risk_never_exceeds_the_cap_and_decays_by_half_life(gaps: list[int], points: float, cap: float) -> None:
    rule = SignalRule(
        id="s", points=points, window_s=10 * 86400, cap=cap, reason="r", source=Source.SIEM, half_life_s=600
    )
    rules = RuleSet((rule,), (), settings=PolicySettings(max_score=100))
    engine = Engine(rules, IdentityMap(None))
    t = T0
    for i, gap in enumerate(gaps):
        t += timedelta(seconds=gap)
        engine.process(
            Event(
                id=f"e{i}", source=Source.SIEM, type="x", time=t, subjects=Subjects(users=("u@x",)), dedup_key=f"e{i}"
            )
        )
        assert engine.state("user:u@x").score <= min(cap, 100) + 1e-9
    now = t.timestamp()
    before = engine.state("user:u@x", now).score
    after = engine.state("user:u@x", now + 600).score
    # One half-life later every hit is worth half: the total halves, unless the cap was binding before.
    # Hits worth less than 0.01 points are forgotten, so each hit may be off by that much.
    if before < min(cap, 100) - 1e-6:
        assert abs(after - before / 2) <= 0.01 * len(gaps) + 1e-9
    else:
        assert after <= before
