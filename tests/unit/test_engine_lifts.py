"""`lifted_by`: a signal that takes a response back (a person reactivated in the IdP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from responder.core.engine import Engine
from responder.core.events import Event, Source, Subjects
from responder.core.identity import IdentityMap
from responder.core.rules import RuleSet
from responder.inventory import Inventory
from responder.policy import load_rules
from responder.policy.loader import PolicyError

INVENTORY = Inventory.load(Path(__file__).resolve().parents[2] / "rules" / "tests" / "inventory.yaml")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BOB = "user:bob@example.com"
POLICY = """
signals:
  - {id: gone, source: okta, type: user.lifecycle.deactivate, points: 100, window: 7d, reason: gone}
  - {id: back, source: okta, type: user.lifecycle.activate, points: 0, window: 1m, reason: back}
  - {id: noisy, source: okta, type: security.threat.detected, points: 45, window: 12h, reason: noisy}
responses:
  - id: offboard
    level: 40
    any_signals: [gone]
    actions: [kill_flows, remove_peer]
    lifted_by: [back]
  - {id: quarantine, level: 10, min_score: 40, actions: [quarantine], ttl: 1h}
"""


def _rules(tmp_path: Path, text: str = POLICY) -> RuleSet:
    (tmp_path / "policy.yaml").write_text(text, encoding="utf-8")
    return load_rules([tmp_path])


def _event(n: int, kind: str, after: timedelta = timedelta(0)) -> Event:
    return Event(
        id=f"e{n}", source=Source.OKTA, type=kind, time=T0 + after,
        subjects=Subjects(users=("bob@example.com",)), dedup_key=f"e{n}",
    )  # fmt: skip


def test_a_lifting_signal_names_the_response_the_subject_and_the_event(tmp_path: Path) -> None:
    engine = Engine(_rules(tmp_path), IdentityMap(INVENTORY))
    (decision,) = engine.process(_event(1, "user.lifecycle.deactivate")).decisions
    assert (decision.response, decision.ttl_s, decision.requires_approval) == ("offboard", None, False)
    outcome = engine.process(_event(2, "user.lifecycle.activate", timedelta(hours=1)))
    (lift,) = outcome.lifts
    assert (lift.subject, lift.response, lift.signal, lift.event_id) == (BOB, "offboard", "back", "e2")
    assert lift.actor == "policy:back (event e2)"
    assert outcome.decisions == ()
    assert any("offboard: lifted by back" in n for x in outcome.explanations for n in x.notes)


def test_a_lift_releases_the_response_so_a_new_deprovisioning_decides_it_again(tmp_path: Path) -> None:
    engine = Engine(_rules(tmp_path), IdentityMap(INVENTORY))
    engine.process(_event(1, "user.lifecycle.deactivate"))
    assert engine.state(BOB).active_response == "offboard"
    engine.process(_event(2, "user.lifecycle.activate", timedelta(hours=1)))
    assert engine.state(BOB).active_response is None
    (again,) = engine.process(_event(3, "user.lifecycle.deactivate", timedelta(hours=2))).decisions
    assert again.response == "offboard"


def test_a_lift_forgets_the_signals_that_decided_the_response_and_keeps_the_others(tmp_path: Path) -> None:
    engine = Engine(_rules(tmp_path), IdentityMap(INVENTORY))
    engine.process(_event(1, "security.threat.detected"))
    engine.process(_event(2, "user.lifecycle.deactivate", timedelta(minutes=1)))
    engine.process(_event(3, "user.lifecycle.activate", timedelta(minutes=2)))
    state = engine.state(BOB)
    assert state.signals == frozenset({"noisy"})
    assert state.score == pytest.approx(45)


def test_a_lift_is_said_even_when_the_engine_does_not_remember_the_response(tmp_path: Path) -> None:
    # The journal holds decisions older than the engine's horizon: the service undoes what it holds.
    engine = Engine(_rules(tmp_path), IdentityMap(INVENTORY))
    (lift,) = engine.process(_event(1, "user.lifecycle.activate")).lifts
    assert lift.response == "offboard"


def test_lifting_is_opt_in_per_response(tmp_path: Path) -> None:
    rules = _rules(tmp_path, POLICY.replace("    lifted_by: [back]\n", ""))
    engine = Engine(rules, IdentityMap(INVENTORY))
    engine.process(_event(1, "user.lifecycle.deactivate"))
    outcome = engine.process(_event(2, "user.lifecycle.activate", timedelta(hours=1)))
    assert outcome.lifts == ()
    assert engine.state(BOB).active_response == "offboard"


def test_the_same_events_give_the_same_lifts(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    events = [_event(1, "user.lifecycle.deactivate"), _event(2, "user.lifecycle.activate", timedelta(hours=1))]
    runs = [[engine.process(e) for e in events] for engine in (Engine(rules, IdentityMap(INVENTORY)) for _ in "ab")]
    assert runs[0] == runs[1]


def test_lifted_by_must_name_a_signal(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="unknown signal 'bakc'"):
        _rules(tmp_path, POLICY.replace("lifted_by: [back]", "lifted_by: [bakc]"))
