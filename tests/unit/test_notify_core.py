"""The notifier's pure parts: routing, the rate limit, de-duplication, and what a message says."""

from __future__ import annotations

from datetime import UTC, datetime

from responder.notify import Notice, NoticeKind
from responder.notify.about import decision_notice
from responder.notify.channels import adaptive_card, signature, slack_blocks
from responder.notify.message import render
from responder.notify.routing import Dedup, Route, TokenBucket, channels_for

AT = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
BODY = {
    "score": 80.0,
    "contributions": [{"rule": "okta-user-reported-suspicious", "points": 80, "reason": "alice reported it"}],
    "actions": [
        {"type": "remove_peer", "hub": "hub1", "peer_key": "JfQ7FIatlaE5jj7rPYO8QBABX8yb7bNbQy4AKY1QIfc="},
        {"type": "delete_element", "hub": "hub1", "set": "admin_devices", "address": "10.100.0.10"},
    ],
}


def _notice(kind: NoticeKind = NoticeKind.ENFORCED, **detail: object) -> Notice:
    return decision_notice(
        kind, at=AT, decision_id="d-1", subject="user:alice@example.com", response="cut-off", body=BODY,
        state="active", actor="policy", **detail,
    )  # fmt: skip


def test_routes_match_on_kind_response_state_and_subject_pattern_and_name_each_channel_once() -> None:
    routes = [
        Route(("slack",), kinds=("awaiting_approval",)),
        Route(("mail", "slack"), responses=("cut-off",), subjects=("user:*@example.com",)),
        Route(("pager",), states=("dry_run",)),
    ]
    assert channels_for(_notice(), routes) == ["mail", "slack"]
    assert channels_for(_notice(NoticeKind.AWAITING_APPROVAL), routes) == ["slack", "mail"]
    other = Notice(NoticeKind.DECIDED, AT, "user:eve@elsewhere.org", "d-2", "cut-off", detail={"state": "dry_run"})
    assert channels_for(other, routes) == ["pager"]
    escalated = Notice(NoticeKind.ESCALATED, AT, "user:alice@example.com", "d-1", channels=("oncall",))
    assert channels_for(escalated, routes) == ["oncall"]


def test_the_token_bucket_lets_a_burst_through_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # one token in half a second
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0


def test_the_same_notice_of_a_decision_is_sent_once_in_the_window() -> None:
    dedup = Dedup(window_s=60)
    key = ("drift", "d-1", "slack")
    assert dedup.first(key, 0.0)
    assert not dedup.first(key, 59.0)
    assert dedup.first(("drift", "d-1", "mail"), 1.0)  # another channel is another message
    assert dedup.first(key, 120.0)


def test_a_message_says_who_what_why_where_verified_and_how_to_undo() -> None:
    notice = _notice(hubs={"hub1": True, "hub2": False}, devices=["admin1", "alice-phone"])
    message = render(notice, console_url="https://responder.example.com/")
    text = message.text
    assert "Enforced: cut-off on user:alice@example.com (decision d-1)" in text
    assert "user:alice@example.com (devices: admin1, alice-phone)" in text  # who
    assert "remove_peer JfQ7" in text and "delete_element admin_devices 10.100.0.10 on hub1" in text  # what
    assert "score 80 = okta-user-reported-suspicious +80 (alice reported it)" in text  # why
    assert "hub1 (verified), hub2 (NOT verified)" in text  # where, verified or not
    page = "https://responder.example.com/console/subjects/user:alice@example.com#d-d-1"
    assert f"`responder undo d-1` or {page}" in text  # undo
    assert message.buttons == ("undo",)


def test_slack_blocks_carry_approve_and_reject_with_the_decision_id_while_it_waits() -> None:
    message = render(_notice(NoticeKind.AWAITING_APPROVAL))
    actions = [b for b in slack_blocks(message) if b["type"] == "actions"]
    assert [(e["action_id"], e["value"]) for e in actions[0]["elements"]] == [("approve", "d-1"), ("reject", "d-1")]
    assert message.undo is None  # nothing is in force yet


def test_a_notice_without_a_decision_has_no_buttons_and_the_card_has_no_link_without_a_console() -> None:
    off = Notice(NoticeKind.ENFORCEMENT_OFF, AT, "hub:hub1", detail={"reason": "hub hub1 does not answer"})
    message = render(off)
    assert message.buttons == () and message.undo is None
    card = adaptive_card(message)
    assert card["version"] == "1.4" and "actions" not in card
    assert {"title": "Reason", "value": "hub hub1 does not answer"} in card["body"][1]["facts"]


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # Fixed vector: a receiver in any language must get the same.
    assert signature(b"0123456789abcdef", "1700000000", b'{"a":1}') == (
        "v1=" + __import__("hmac").new(b"0123456789abcdef", b'1700000000.{"a":1}', "sha256").hexdigest()
    )
