"""Approval timeouts: the rule schema that states them, and what the clock decides (a virtual clock)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from responder.core.approvals import ApprovalTimeout, OnTimeout, timeout_step
from responder.policy.schema import ResponseSpec

T0 = 1_800_000_000.0
BASE = {"id": "rotate-key", "level": 30, "actions": ["rotate_key"], "approval": True}


def _timeout(then: OnTimeout, escalate_to: str | None = None) -> ApprovalTimeout:
    return ApprovalTimeout(after_s=900, then=then, escalate_to=escalate_to)


@pytest.mark.parametrize("then", [OnTimeout.REJECT, OnTimeout.APPROVE, OnTimeout.ESCALATE])
def test_nothing_happens_before_the_timeout_and_on_timeout_happens_at_it(then: OnTimeout) -> None:
    timeout = _timeout(then, "oncall" if then is OnTimeout.ESCALATE else None)
    assert timeout_step(timeout, T0, None, T0 + 899.9) is None
    assert timeout_step(timeout, T0, None, T0 + 900) is then
    assert timeout_step(timeout, T0, None, T0 + 86_400) is then


def test_an_escalated_decision_waits_as_long_again_and_is_then_rejected() -> None:
    timeout = _timeout(OnTimeout.ESCALATE, "oncall")
    escalated_at = T0 + 905  # the lifecycle's pass came a little after the timeout
    assert timeout_step(timeout, T0, escalated_at, T0 + 1200) is None
    assert timeout_step(timeout, T0, escalated_at, escalated_at + 899) is None
    assert timeout_step(timeout, T0, escalated_at, escalated_at + 900) is OnTimeout.REJECT


def test_the_timeout_travels_in_the_decision_body_unchanged() -> None:
    timeout = _timeout(OnTimeout.ESCALATE, "oncall")
    assert ApprovalTimeout.from_dict(timeout.to_dict()) == timeout


def test_a_response_states_an_approval_timeout_with_a_duration_and_what_then() -> None:
    spec = ResponseSpec.model_validate(BASE | {"approval_timeout": "15m", "on_timeout": "escalate",
                                               "escalate_to": "secops-leads"})  # fmt: skip
    assert (spec.approval_timeout, spec.on_timeout, spec.escalate_to) == (900, "escalate", "secops-leads")
    assert ResponseSpec.model_validate(BASE | {"approval_timeout": 60}).on_timeout == "reject"  # the default


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"approval_timeout": "15m", "on_timeout": "escalate"}, "escalate needs escalate_to"),
        ({"approval_timeout": "15m", "escalate_to": "x"}, "escalate_to is only used with on_timeout: escalate"),
        ({"on_timeout": "approve"}, "need approval_timeout"),
        ({"approval_timeout": "15m", "approval": False}, "approval_timeout needs approval"),
        ({"approval_timeout": "15m", "on_timeout": "ignore"}, "'reject', 'escalate' or 'approve'"),
        ({"approval_timeout": "-5m"}, "duration"),
    ],
)
def test_an_inconsistent_approval_timeout_is_an_error_that_says_what_to_change(
    extra: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ResponseSpec.model_validate(BASE | extra)
