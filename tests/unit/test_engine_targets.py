"""Target resolution in the engine: which peers a chosen response acts on, and why a protected one is left out."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from responder.core.engine import Engine
from responder.core.events import Event, Source, Subjects
from responder.core.identity import IdentityMap
from responder.core.rules import RuleSet
from responder.inventory import Inventory
from responder.policy import load_rules

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
RULES = load_rules([RULES_DIR])
INVENTORY = Inventory.load(RULES_DIR / "tests" / "inventory.yaml")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ALICE_PHONE_KEY = "3Ez9Hq8bVQeKkYy0b1u1sQ7wM6yW7m6ZrZ4y1iM9c2k="


def _reported(subjects: Subjects) -> Event:
    return Event(
        id="e1",
        source=Source.OKTA,
        type="user.account.report_suspicious_activity_by_enduser",
        time=T0,
        subjects=subjects,
        dedup_key="e1",
    )


def _protecting(**protected: frozenset[str]) -> RuleSet:
    return dataclasses.replace(RULES, protection=dataclasses.replace(RULES.protection, **protected))


def _notes(engine: Engine, event: Event) -> tuple[str, ...]:
    (explanation,) = engine.process(event).explanations
    return explanation.notes


def test_subject_name_is_the_key_without_its_kind() -> None:
    identity = IdentityMap(INVENTORY)
    assert identity.subject("user:alice@example.com").name == "alice@example.com"
    assert identity.subject("device:kiosk:9").name == "kiosk:9"
    assert identity.subject("ip:10.100.0.99").kind == "ip"


def test_a_protected_device_is_suppressed_before_any_target_is_looked_for() -> None:
    event = _reported(Subjects(devices=("kiosk9",)))
    engine = Engine(_protecting(devices=frozenset({"kiosk9"})), IdentityMap(INVENTORY))
    notes = _notes(engine, event)
    assert any(n.endswith("suppressed, device:kiosk9 is protected") for n in notes)
    assert not any("no enforceable target" in n for n in notes)
    unprotected = _notes(Engine(RULES, IdentityMap(INVENTORY)), event)
    assert any(n.endswith("no enforceable target for device:kiosk9") for n in unprotected)


def test_a_protected_peer_is_left_out_and_the_owners_other_peers_are_acted_on() -> None:
    phone = {"name": "alice-phone", "hub": "hub1", "public_key": ALICE_PHONE_KEY, "tunnel_ip": "10.100.0.50",
             "owner": "alice@example.com"}  # fmt: skip
    inventory = Inventory.model_validate(
        {**INVENTORY.model_dump(mode="json"), "peers": [*INVENTORY.model_dump(mode="json")["peers"], phone]}
    )
    admin1_key = next(str(p.public_key) for p in inventory.peers if p.name == "admin1")
    engine = Engine(_protecting(keys=frozenset({admin1_key})), IdentityMap(inventory))
    outcome = engine.process(_reported(Subjects(users=("alice@example.com",))))
    (decision,) = outcome.decisions
    assert decision.actions
    assert {a.hub for a in decision.actions} == {"hub1"}
    assert all(str(a.address or "") != "10.100.0.10" and str(a.peer_key or "") != admin1_key for a in decision.actions)
    assert any(str(a.address) == "10.100.0.50" or str(a.peer_key) == ALICE_PHONE_KEY for a in decision.actions)
    assert len(set(decision.actions)) == len(decision.actions)
    assert any(n.endswith("peer admin1 is protected") for n in decision.notes)
