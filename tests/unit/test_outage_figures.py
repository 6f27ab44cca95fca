"""The outage bench's figures, computed from journal rows and a hub read-back (bench/outage_bench.py)."""

from __future__ import annotations

from typing import Any

from bench.outage_bench import IntentRow, containment_ms, disagreements, heal_to_verified
from responder.lab.faults import HubState

KEY, ADDRESS = "k" * 43 + "=", "10.100.0.30"


def _row(decision: str, kind: str, action: dict[str, Any], *, state: str = "done", verified: bool = True,
         decision_state: str = "active", at: float = 100.0) -> IntentRow:  # fmt: skip
    return IntentRow(decision, f"user:{decision}", decision_state, kind, {"hub": "hub1", **action}, state, verified, at)


PEER = {"type": "remove_peer", "peer_key": KEY}
ELEMENT = {"type": "delete_element", "set": "admin_devices", "address": ADDRESS}
FLOWS = {"type": "kill_flows", "address": ADDRESS}
CUT_OFF = HubState(peers={"hub1": set()}, sets={("hub1", "admin_devices"): set()})
UNTOUCHED = HubState(peers={"hub1": {KEY}}, sets={("hub1", "admin_devices"): {ADDRESS}})


def test_a_verified_cut_off_the_hub_shows_is_no_disagreement() -> None:
    rows = [_row("d", "apply", PEER), _row("d", "apply", ELEMENT), _row("d", "apply", FLOWS)]
    assert disagreements(rows, CUT_OFF) == []


def test_a_verified_action_the_hub_does_not_show_is_a_disagreement() -> None:
    assert len(disagreements([_row("d", "apply", PEER), _row("d", "apply", ELEMENT)], UNTOUCHED)) == 2


def test_an_action_in_effect_that_the_journal_shows_pending_is_a_disagreement() -> None:
    wrong = disagreements([_row("d", "apply", PEER, state="pending", verified=False)], CUT_OFF)
    assert len(wrong) == 1 and "pending" in wrong[0]


def test_an_undone_decision_still_in_effect_on_the_hub_is_a_disagreement_whatever_its_applies_say() -> None:
    rows = [_row("d", "apply", PEER, state="cancelled", verified=False, decision_state="undone")]
    assert disagreements(rows, UNTOUCHED) == []
    assert len(disagreements(rows, CUT_OFF)) == 1


def test_heal_to_verified_counts_applies_in_force_and_undos_on_that_hub_only() -> None:
    rows = [
        _row("a", "apply", PEER, at=101.5),
        _row("b", "apply", PEER, decision_state="undone", at=90.0),
        _row("b", "undo", PEER, at=102.0),
        _row("c", "apply", PEER | {"hub": "hub2"}, at=50.0),
        _row("d", "apply", PEER, state="pending", verified=False),
    ]
    assert heal_to_verified(rows, "hub1", 100.0) == [1.5, 2.0]


def test_containment_is_arrival_to_the_last_containing_action_verified_without_the_flow_kill() -> None:
    rows = [_row("a", "apply", ELEMENT, at=10.2), _row("a", "apply", PEER, at=10.5), _row("a", "apply", FLOWS, at=30)]
    rows += [_row("b", "apply", PEER, at=10.1), _row("b", "apply", ELEMENT, state="pending", verified=False)]
    assert containment_ms(rows, {"user:a": 10.0, "user:b": 10.0}) == [500.0]
