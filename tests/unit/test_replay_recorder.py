"""The recorder by itself: accepted deliveries become a case draft, secrets redacted, that validates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from responder.replay.case import REDACTED, load_case
from responder.replay.recorder import Recorder, expectations_from, fill_expectations, redact_headers
from responder.replay.report import CaseReport, DecisionView
from responder.replay.transmitter import Transmitter

T0 = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
OKTA_SECRET = "okta-very-secret-value"
CLIENT_STATE = "graph-client-state-secret"


def _okta() -> bytes:
    return json.dumps(
        {"eventId": "e1", "data": {"events": [{"uuid": "u1", "eventType": "user.session.start"}]}}
    ).encode()


def test_headers_keep_what_replay_needs_and_hide_credentials() -> None:
    got = redact_headers(
        {
            "Authorization": OKTA_SECRET,
            "Content-Type": "application/json",
            "User-Agent": "Okta Event Hooks",
            "X-Okta-Request-Id": "abc",
            "Cookie": "session=1",
            "X-Api-Key": "k",
            "Host": "responder:8080",
            "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }
    )
    assert got == {
        "authorization": REDACTED,
        "content-type": "application/json",
        "user-agent": "Okta Event Hooks",
        "x-okta-request-id": "abc",
        "x-api-key": REDACTED,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }


def test_a_session_becomes_one_valid_draft_without_secrets(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, name="session", clock=lambda: T0)
    tx = Transmitter()
    claims = {
        "iss": "https://idp.example",
        "aud": "https://us.example",
        "jti": "j1",
        "iat": 1772445600,
        "sub_id": {"format": "email", "email": "alice@example.com"},
        "events": {"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {}},
    }
    entra = {"value": [{"id": "n1", "clientState": CLIENT_STATE, "changeType": "updated", "resource": "users/1"}]}
    wazuh = b'{"rule": {"level": 12}, "id": "1.2"}'

    recorder.delivery("okta", {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}, _okta(), T0)
    recorder.delivery(
        "entra", {"Content-Type": "application/json"}, json.dumps(entra).encode(), T0 + timedelta(seconds=90)
    )
    recorder.delivery(
        "ssf", {"Content-Type": "application/secevent+jwt"}, tx.sign(claims).encode(), T0 + timedelta(minutes=5)
    )
    path = recorder.delivery("kafka:wazuh", {}, wazuh, T0 + timedelta(hours=2), key=b"app1")
    assert path == tmp_path / "session.yaml"

    text = path.read_text()
    assert OKTA_SECRET not in text and CLIENT_STATE not in text and "eyJ" not in text
    case = load_case(path)  # a valid case, as it stands
    okta, graph, ssf, kafka = case.spec.deliveries
    assert [d.at for d in case.spec.deliveries] == [0, 90, 300, 7200]
    assert [d.via for d in case.spec.deliveries] == ["okta", "entra", "ssf", "kafka:wazuh"]
    assert okta.headers == {"authorization": REDACTED, "content-type": "application/json"}
    assert case.body_json(okta) == json.loads(_okta())
    assert graph.body["value"][0]["clientState"] == REDACTED
    assert ssf.body == claims  # the SET's claims: replay signs them again
    assert "content-type" not in ssf.headers
    assert (kafka.key, case.body_bytes(kafka)) == (
        "app1",
        json.dumps(json.loads(wazuh), separators=(",", ":")).encode(),
    )
    assert case.spec.expect.decisions == []


def test_a_delivery_that_cannot_be_recorded_does_not_raise(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, name="bad", clock=lambda: T0)
    assert recorder.delivery("ssf", {}, b"not a jws") is None
    assert recorder.delivery("pager", {}, b"{}") is None
    assert not (tmp_path / "bad.yaml").exists()


def test_non_json_bodies_are_kept_as_text(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, name="raw", clock=lambda: T0)
    path = recorder.delivery("kafka:splunk", {}, b"<xml/>")
    assert path is not None
    case = load_case(path)
    assert case.body_bytes(case.spec.deliveries[0]) == b"<xml/>"


def test_expectations_are_filled_from_a_run(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, name="fill", clock=lambda: T0)
    path = recorder.delivery("okta", {"Authorization": OKTA_SECRET}, _okta())
    assert path is not None
    report = CaseReport("fill", str(path), "lab", enforced=["quarantine hub1 quarantine 10.100.0.10"])
    actions = ["quarantine hub1 quarantine 10.100.0.10"]
    report.decisions = [
        DecisionView("dec-1", "user:alice@example.com", "quarantine", "active", False, actions, [], 1, 5.0)
    ]
    assert expectations_from(report)["enforced"] == ["quarantine hub1 quarantine 10.100.0.10"]
    fill_expectations(path, report)
    case = load_case(path)
    (decision,) = case.spec.expect.decisions
    assert (decision.subject, decision.response, decision.state, decision.actions) == (
        "user:alice@example.com", "quarantine", "active", ["quarantine hub1 quarantine 10.100.0.10"],
    )  # fmt: skip
    assert yaml.safe_load(path.read_text())["expect"]["reachability"] == []
