"""The replay's diff of expected against got, on its own: decisions, enforcement, untouched subjects and
what a probe outcome means for a reachability check."""

from __future__ import annotations

from typing import Any

import pytest

from responder.core.identity import IdentityMap
from responder.replay.case import Expect, ExpectedDecision, Reach
from responder.replay.expectations import (
    decision_failures,
    diff,
    enforced,
    enforcement_failures,
    reach_met,
    subject_key,
    untouched_failures,
)
from responder.replay.inventory import lab_shaped_inventory
from responder.replay.report import ActionView, DecisionView

CUT = [
    "delete_element hub1 admin_devices 10.100.0.10",
    "kill_flows hub1 10.100.0.10",
    "remove_peer hub1 admin1",
]
IDENTITY = IdentityMap(lab_shaped_inventory(1))


def _applied(action: str, state: str = "done", verified: bool | None = True) -> ActionView:
    return ActionView(action, "apply", state, verified, None, 1.0)


def _decision(subject: str = "user:alice@example.com", response: str = "cut-off", **extra: Any) -> DecisionView:
    values: dict[str, Any] = {
        "id": f"dec-{subject}-{response}",
        "subject": subject,
        "response": response,
        "state": "active",
        "approval": False,
        "actions": list(CUT),
        "intents": [_applied(a) for a in CUT],
        "delivery": 1,
        "latency_ms": 2.0,
    }
    return DecisionView(**(values | extra))


def _expected(**extra: Any) -> ExpectedDecision:
    return ExpectedDecision.model_validate({"subject": "user:alice@example.com", "response": "cut-off"} | extra)


def test_a_decision_as_expected_gives_no_difference() -> None:
    expected = [_expected(state="active", approval=False, actions=list(reversed(CUT)))]
    assert decision_failures(expected, [_decision()], lab_mode=True) == []


def test_a_missing_decision_names_what_came_instead_for_its_subject() -> None:
    got = [_decision(response="quarantine", state="dry_run")]
    assert decision_failures([_expected(state="active")], got, lab_mode=False) == [
        "- expected: user:alice@example.com -> cut-off [active]; "
        "got instead: user:alice@example.com -> quarantine [dry_run]",
        f"+ unexpected: {got[0].line()}",
    ]


def test_a_missing_decision_for_a_subject_nothing_was_decided_about_says_so() -> None:
    failures = decision_failures([_expected(subject="user:bob@example.com")], [], lab_mode=True)
    assert failures == ["- expected: user:bob@example.com -> cut-off; got nothing for this subject"]


def test_each_expected_decision_matches_one_decision_only() -> None:
    twice = [_expected(), _expected()]
    failures = decision_failures(twice, [_decision()], lab_mode=True)
    assert failures == ["- expected: user:alice@example.com -> cut-off; got nothing for this subject"]


def test_state_is_compared_only_when_the_run_enforced() -> None:
    expected, got = [_expected(state="active")], [_decision(state="dry_run")]
    assert decision_failures(expected, got, lab_mode=False) == []
    assert decision_failures(expected, got, lab_mode=True) == [
        "~ user:alice@example.com -> cut-off: state: expected active, got dry_run"
    ]


def test_approval_and_actions_differences_are_listed_one_by_one() -> None:
    expected = [_expected(approval=True, actions=[CUT[0], "rotate_key hub1 admin1"])]
    assert decision_failures(expected, [_decision()], lab_mode=True) == [
        "~ user:alice@example.com -> cut-off: approval: expected True, got False",
        "~ user:alice@example.com -> cut-off: action missing: rotate_key hub1 admin1",
        f"~ user:alice@example.com -> cut-off: action not expected: {CUT[1]}",
        f"~ user:alice@example.com -> cut-off: action not expected: {CUT[2]}",
    ]


def test_enforced_counts_only_applied_actions_that_are_done() -> None:
    intents = [
        _applied(CUT[0]),
        _applied(CUT[1], state="failed"),
        ActionView(CUT[0], "undo", "done", True, None, None),
        _applied(CUT[2], state="pending", verified=None),
    ]
    assert enforced([_decision(intents=intents), _decision(response="quarantine", intents=[_applied(CUT[0])])]) == [
        CUT[0]
    ]


def test_enforcement_differences_missing_unexpected_and_unverified() -> None:
    got = [_decision(intents=[_applied(CUT[0], verified=False), _applied(CUT[1])])]
    assert enforcement_failures([CUT[0], CUT[2]], got) == [
        f"- enforced, missing: {CUT[2]}",
        f"+ enforced, not expected: {CUT[1]}",
        f"~ enforced but not verified: {CUT[0]}",
    ]


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("alice@example.com", "user:alice@example.com"),
        ("app1", "device:app1"),
        ("peer:app1", "peer:app1"),
        ("ip:10.100.0.20", "ip:10.100.0.20"),
    ],
)
def test_subjects_are_keyed_as_the_engine_keys_them(written: str, key: str) -> None:
    assert subject_key(written) == key


def test_an_untouched_subject_may_be_neither_decided_about_nor_named_by_an_action() -> None:
    about_app = _decision(subject="user:svc-app@example.com")
    naming_app = _decision(actions=["quarantine hub1 10.100.0.20", "remove_peer hub1 app1", CUT[0]])
    elsewhere = _decision(subject="user:bob@example.com")
    failures = untouched_failures(["svc-app@example.com"], [about_app, naming_app, elsewhere], IDENTITY)
    assert failures == [
        f"! untouched user:svc-app@example.com: decided {about_app.line()}",
        f"! untouched user:svc-app@example.com: {naming_app.id} (user:alice@example.com -> cut-off) acts on it: "
        "quarantine hub1 10.100.0.20, remove_peer hub1 app1",
    ]


def test_the_whole_diff_in_a_dry_run_leaves_enforcement_aside() -> None:
    expect = Expect.model_validate({
        "decisions": [{"subject": "user:alice@example.com", "response": "cut-off", "state": "active"}],
        "enforced": ["rotate_key hub1 admin1"],
        "untouched": ["svc-app@example.com"],
    })  # fmt: skip
    got = [_decision(state="dry_run", intents=[])]
    assert diff(expect, got, lab_mode=False, identity=IDENTITY) == []
    assert diff(expect, got, lab_mode=True, identity=IDENTITY) == [
        "~ user:alice@example.com -> cut-off: state: expected active, got dry_run",
        "- enforced, missing: rotate_key hub1 admin1",
    ]


@pytest.mark.parametrize(
    ("expect", "outcome", "met"),
    [
        ("open", "open", True),
        ("open", "dropped", False),
        ("dropped", "dropped", True),
        ("dropped", "refused", False),
        ("refused", "refused", True),
        ("closed", "dropped", True),
        ("closed", "refused", True),
        ("closed", "open", False),
    ],
)
def test_a_probe_outcome_meets_a_check_as_its_expectation_says(expect: str, outcome: str, met: bool) -> None:
    reach = Reach.model_validate({"src": "admin1", "dst": "app1", "expect": expect})
    assert reach_met(reach, outcome) is met
