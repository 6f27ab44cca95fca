"""Every source's payloads, written to the documented shapes, become the canonical events the rules expect."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from responder.core.events import Event, Severity, Source
from responder.ingest import entra, okta, ssf
from responder.ingest.errors import PayloadError
from responder.ingest.kafka import parse
from responder.ingest.paths import lookup, parse_time
from responder.ingest.siem import Connector, ConnectorError, load_connectors
from tests.support.payloads import Transmitter, payload, raw

CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"


def test_okta_batch_becomes_one_event_per_log_event() -> None:
    delivery_id, events = okta.parse_delivery(payload("okta/batch.json"))
    assert delivery_id == "0b6c1f9e-3d52-4c1b-8f0e-2a7d9c4b5e61"
    out = [okta.normalise(e) for e in events]
    assert [e.type for e in out] == [
        "user.account.report_suspicious_activity_by_enduser",
        "security.breached_credential.detected",
        "user.risk.detect",
    ]
    assert [e.subjects.users for e in out] == [("alice@example.com",), ("bob@example.com",), ("bob@example.com",)]
    assert out[2].severity is Severity.HIGH  # from debugData.risk level=HIGH, not Okta's INFO
    assert out[1].severity is Severity.MEDIUM  # WARN
    assert out[0].dedup_key == "okta:c1d2e3f4-1a2b-11f1-9c3d-000000000001"
    assert out[0].time == datetime(2026, 3, 2, 11, 2, 1, 2000, tzinfo=UTC)


def test_okta_login_keeps_the_public_address_as_an_attribute_not_a_subject() -> None:
    _, (event,) = okta.parse_delivery(payload("okta/session_start.json"))
    e = okta.normalise(event)
    assert e.subjects.addresses == ()
    assert e.attributes["client"]["ipAddress"] == "203.0.113.45"
    assert e.attributes["debugContext"]["debugData"]["risk"].count("New Device") == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "data: Field required"),
        ({"data": {"events": "x"}}, "data.events"),
        ({"data": {"events": [{"uuid": "u"}]}}, None),
    ],
)
def test_okta_bad_envelopes_say_what_is_wrong(body: object, message: str | None) -> None:
    if message is not None:
        with pytest.raises(PayloadError, match=message.replace(".", r"\.")):
            okta.parse_delivery(body)
    else:
        _, (event,) = okta.parse_delivery(body)
        with pytest.raises(PayloadError, match="published"):
            okta.normalise(event)


def test_entra_identity_protection_objects() -> None:
    detection = entra.identity_protection_event(payload("entra/risk_detection.json"))
    assert (detection.type, detection.severity, detection.subjects.users) == (
        "leakedCredentials",
        Severity.HIGH,
        ("bob@example.com",),
    )
    risky = entra.identity_protection_event(payload("entra/risky_user.json"))
    assert (risky.type, risky.severity, risky.product) == ("riskyUser", Severity.HIGH, "entra-riskyUser")
    signin = entra.identity_protection_event(payload("entra/signin.json"))
    assert (signin.type, signin.severity, signin.subjects.devices) == ("signIn", Severity.MEDIUM, ("dev-alice-laptop",))
    assert signin.source is Source.ENTRA


def test_entra_event_hubs_records_are_unwrapped() -> None:
    formats = load_connectors(CONNECTORS)
    events = formats["entra"].events(payload("entra/eventhubs.json"), raw("entra/eventhubs.json"))
    assert [(e.type, e.subjects.users[0]) for e in events] == [
        ("unlikelyTravel", "bob@example.com"),
        ("riskyUser", "alice@example.com"),
    ]


def test_entra_notifications_and_client_state() -> None:
    (n,) = entra.parse_notifications(payload("entra/notification.json"))
    assert entra.client_state_matches(n, "CLIENT-STATE-PLACEHOLDER")
    assert not entra.client_state_matches(n, "CLIENT-STATE-PLACEHOLDEr")
    event = entra.notification_event(n, "2026-03-02T10:00:00+00:00")
    assert event.type == "graph.updated" and "clientState" not in event.attributes
    (life,) = entra.parse_notifications(payload("entra/lifecycle.json"))
    assert entra.notification_event(life, "2026-03-02T10:00:00+00:00").type == "graph.lifecycle.subscriptionRemoved"


async def test_ssf_sets_verify_and_name_their_subjects(tmp_path: Path) -> None:
    tx = Transmitter()
    (tmp_path / "jwks.json").write_text(json.dumps(tx.jwks()))
    keys = ssf.Keys(jwks_file=tmp_path / "jwks.json")
    where = {"issuer": "https://idp.partner.example", "audience": "https://soar.acme.example/ssf/push"}

    revoked = ssf.events_of(await ssf.verify(tx.sign(payload("ssf/session_revoked.json")), keys, **where))
    (e,) = revoked
    assert e.type.endswith("/caep/event-type/session-revoked")
    assert e.subjects.users == ("j.doe@acme.example",)
    assert e.time == datetime.fromtimestamp(1772445591, UTC)

    (okta_style,) = ssf.events_of(await ssf.verify(tx.sign(payload("ssf/okta_credential_change.json")), keys, **where))
    assert okta_style.subjects.users == ("alice@example.com",)
    assert okta_style.subjects.devices == ("dev-alice-laptop",)
    assert okta_style.attributes["change_type"] == "revoke"
    assert okta_style.time.year == 2026  # milliseconds recognised

    other = Transmitter()
    with pytest.raises(ssf.SetError) as bad_key:
        await ssf.verify(other.sign(payload("ssf/session_revoked.json")), keys, **where)
    assert bad_key.value.code == "invalid_key"
    with pytest.raises(ssf.SetError) as bad_aud:
        await ssf.verify(tx.sign({**payload("ssf/session_revoked.json"), "aud": "https://other"}), keys, **where)
    assert bad_aud.value.code == "invalid_audience"
    with pytest.raises(ssf.SetError) as bad_iss:
        await ssf.verify(tx.sign({**payload("ssf/session_revoked.json"), "iss": "https://evil"}), keys, **where)
    assert bad_iss.value.code == "invalid_issuer"
    with pytest.raises(ssf.SetError, match="typ"):
        await ssf.verify(tx.sign(payload("ssf/session_revoked.json"), typ="JWT"), keys, **where)


@pytest.mark.parametrize(
    ("fmt", "file", "kind", "severity", "addresses", "users"),
    [
        ("wazuh", "siem/wazuh.json", "5712", Severity.HIGH, ["10.100.0.30"], []),
        ("elastic", "siem/elastic.json", "1c27fa22-7727-4dd3-81c0-de6da5555feb", Severity.HIGH,
         ["10.100.0.30"], []),
        ("ocsf", "siem/ocsf.json", "an-77", Severity.CRITICAL, ["10.100.0.10"], ["alice@example.com"]),
        ("splunk", "siem/splunk.json", "ESCU - Lateral movement over SSH - Rule", Severity.CRITICAL,
         ["10.100.0.30"], ["bob@example.com"]),
    ],
)  # fmt: skip
def test_siem_formats_map_declaratively(
    fmt: str, file: str, kind: str, severity: Severity, addresses: list[str], users: list[str]
) -> None:
    (event,) = load_connectors(CONNECTORS)[fmt].events(payload(file), raw(file))
    assert (event.source, event.product, event.type, event.severity) == (Source.SIEM, fmt, kind, severity)
    assert list(event.subjects.addresses) == [ip_address(a) for a in addresses]
    assert list(event.subjects.users) == users
    assert event.dedup_key.startswith(f"siem:{fmt}:")


def test_the_reporting_host_is_the_subject_only_when_the_alert_names_no_other() -> None:
    wazuh = load_connectors(CONNECTORS)["wazuh"]
    alert = payload("siem/wazuh.json")
    (with_source,) = wazuh.events(alert, raw("siem/wazuh.json"))
    assert (with_source.subjects.devices, [str(a) for a in with_source.subjects.addresses]) == ((), ["10.100.0.30"])
    del alert["data"]["srcip"], alert["data"]["srcuser"]
    (host_only,) = wazuh.events(alert, json.dumps(alert).encode())
    assert host_only.subjects.devices == ("app1",)
    assert [str(a) for a in host_only.subjects.addresses] == ["10.100.0.20"]


def test_a_message_of_another_format_is_refused_with_the_reason() -> None:
    formats = load_connectors(CONNECTORS)
    with pytest.raises(PayloadError, match="class_uid"):
        formats["ocsf"].events(payload("siem/wazuh.json"), raw("siem/wazuh.json"))
    with pytest.raises(PayloadError, match="expected a JSON object"):
        formats["wazuh"].events([1, 2], b"[1,2]")


def test_a_bad_connector_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("name: mine\ntime: {paths: [t], format: weird}\nseverity: {paths: [s]}\n")
    with pytest.raises(ConnectorError, match=r"mine\.yaml: time\.format"):
        load_connectors(tmp_path)
    with pytest.raises(Exception, match="severity"):
        Connector.model_validate({"name": "x", "time": {"paths": ["t"]}})


def test_paths_read_flat_dotted_keys_and_fan_out() -> None:
    doc = {"kibana.alert.severity": "high", "a": {"b": [{"c": 1}, {"c": 2}]}, "x.y": {"z": 3}}
    assert lookup(doc, "kibana.alert.severity") == ["high"]
    assert lookup(doc, "a.b[].c") == [1, 2]
    assert lookup(doc, "x.y.z") == [3]
    assert lookup(doc, "missing.path") == []
    assert parse_time("2026-03-02T10:21:44.018+0000").utcoffset() is not None
    with pytest.raises(PayloadError):
        parse_time(["not", "a", "time"])
    # The longest key present wins even where it leads nowhere, as documented in connectors/README.md.
    assert lookup({"a.b": {"x": 1}, "a": {"b": {"c": 2}}}, "a.b.c") == []
    assert lookup({"a": [{"b": [{"c": 1}, {"c": None}, 5]}, {"b": 7}]}, "a[].b[].c") == [1]
    assert lookup({"a": [1, None, 2]}, "a") == [1, 2]
    assert lookup(["not", "a", "dict"], "a") == []


@pytest.mark.parametrize(
    "fmt, name", [("wazuh", "siem/wazuh.json"), ("elastic", "siem/elastic.json"), ("ocsf", "siem/ocsf.json"),
                  ("splunk", "siem/splunk.json"), ("entra", "entra/eventhubs.json")],
)  # fmt: skip
def test_an_event_reads_back_from_the_journal_as_it_was_made(fmt: str, name: str) -> None:
    # The pipeline decides on the event its hand-off kept in memory, a restarted instance on the journal's
    # JSON: the two must be equal, or a rebuild would not reproduce the decisions.
    for event in load_connectors(CONNECTORS)[fmt].events(payload(name), raw(name)):
        assert Event.model_validate_json(event.model_dump_json()) == event
    for e in okta.parse_delivery(payload("okta/batch.json"))[1]:
        event = okta.normalise(e)
        assert Event.model_validate_json(event.model_dump_json()) == event


def test_kafka_messages_must_be_strict_json() -> None:
    # NaN would be stored as null: the event kept in memory and the journal's would differ.
    wazuh = load_connectors(CONNECTORS)["wazuh"]
    for body in (b'{"rule": {"level": NaN}}', b"[" * 300 + b"]" * 300, b'{"a": 1} trailing'):
        record = ConsumerRecord("t", 0, 0, 0, 0, None, body, None, 0, len(body), [])
        with pytest.raises(PayloadError, match="not valid JSON"):
            parse(record, wazuh)
