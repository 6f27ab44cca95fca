"""What a replayed webhook delivery carries: the run's own secret and clientState in place of recorded
(redacted) ones, every other header and byte as recorded."""

from __future__ import annotations

import json

from responder.replay.case import REDACTED, DeliverySpec
from responder.replay.sending import webhook_headers, with_client_state


def _delivery(via: str, headers: dict[str, str]) -> DeliverySpec:
    return DeliverySpec(via=via, headers=headers, body={})


def test_a_redacted_authorization_becomes_the_runs_secret_and_other_redacted_headers_are_dropped() -> None:
    delivery = _delivery("okta", {"authorization": REDACTED, "X-Okta-Request-Id": REDACTED, "User-Agent": "Okta"})
    assert webhook_headers(delivery, "run-secret") == {"Authorization": "run-secret", "User-Agent": "Okta"}


def test_the_runs_secret_is_added_when_the_recording_has_no_authorization() -> None:
    assert webhook_headers(_delivery("okta", {}), "run-secret") == {"Authorization": "run-secret"}


def test_a_recorded_authorization_is_sent_as_recorded() -> None:
    delivery = _delivery("okta", {"Authorization": "wrong-on-purpose"})
    assert webhook_headers(delivery, "run-secret") == {"Authorization": "wrong-on-purpose"}


def test_without_a_secret_a_redacted_authorization_is_dropped() -> None:
    assert webhook_headers(_delivery("entra", {"Authorization": REDACTED, "A": "b"}), None) == {"A": "b"}


def test_missing_or_redacted_client_states_become_the_runs_and_others_stay() -> None:
    raw = json.dumps({
        "value": [{"clientState": REDACTED, "id": 1}, {"id": 2}, {"clientState": "recorded-wrong", "id": 3}]
    }).encode()  # fmt: skip
    sent = json.loads(with_client_state(raw, "run-state"))
    assert [n.get("clientState") for n in sent["value"]] == ["run-state", "run-state", "recorded-wrong"]


def test_a_body_with_nothing_to_fill_in_is_sent_byte_for_byte() -> None:
    for raw in (b'{"value":  [{"clientState": "x"}]}', b"not json", b'{"validationToken": "t"}'):
        assert with_client_state(raw, "run-state") == raw
