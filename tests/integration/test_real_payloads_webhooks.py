"""The webhook sources (Okta, Microsoft Graph, Shared Signals) on what the vendors and the specifications
publish (tests/payloads/real/, provenance beside each): every payload is read, or refused for the reason
the table states; every one is scored as the default policy says; and one unusable record of a batch
costs only itself, over HTTP into the journal as in production, and under mutation."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responder.config import Settings
from responder.core.decisions import Decision
from responder.core.engine import Engine
from responder.core.events import Event
from responder.core.identity import IdentityMap
from responder.ingest import entra, okta, ssf
from responder.ingest.errors import PayloadError
from responder.inventory import Inventory
from responder.journal import DeliveryRecord, Journal, RejectedRecord, open_journal
from responder.policy import load_rules
from tests.support.service import event_keys, no_hubs, serving

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "payloads" / "real"
RULES = load_rules([ROOT / "rules"])
INVENTORY = Inventory.load(ROOT / "rules" / "tests" / "inventory.yaml")
GRAPH_CLIENT_STATE = "secretClientValue"  # the documentation's own, in its example
OKTA_SECRET = "Basic b2t0YTpzZWNyZXQtdmFsdWU="
RECEIVED = "2026-03-02T10:00:00+00:00"
ALICE = "user:alice@example.com"


@dataclass(frozen=True)
class Decides:
    """What the default policy decides on the payload alone: (subject, response) pairs, [] for nothing."""

    decisions: list[tuple[str, str]]


@dataclass(frozen=True)
class Refused:
    """The payload is not read, and this is why (a substring of the reason)."""

    reason: str


EXPECTED: dict[str, Decides | Refused] = {
    # Okta: benign activity, as a user or an admin does it, decides nothing.
    "okta/hook-delivery-user-session-start.json": Decides([]),
    "okta/system-operation-rate-limit-violation.json": Decides([]),
    "okta/system-push-send-factor-verify-push.json": Decides([]),
    "okta/user-authentication-auth-via-mfa.json": Decides([]),
    "okta/user-authentication-auth-via-idp.json": Decides([]),
    "okta/user-authentication-sso-failure.json": Decides([]),
    "okta/user-account-update-password.json": Decides([]),
    "okta/user-session-start-2017.json": Decides([]),
    # A new device alone is not a signal: only after a fresh MFA reset (see the sequence tests below).
    "okta/session-start-new-device-threat-suspected.json": Decides([]),
    "okta/user-session-start-log-only-security-data.json": Decides([]),
    "okta/user-authentication-verify-new-device-risk-high.json": Decides([]),
    # Okta's own lockout after failed sign-ins (the actor is the user): never offboards, or anyone could
    # cut anyone off by failing to sign in as them.
    "okta/user-account-lock-new-device.json": Decides([]),
    # An administrator deactivated the user: offboarding of the target, not of the administrator.
    "okta/user-lifecycle-deactivate-by-admin.json": Decides([(ALICE, "offboard")]),
    # An MFA reset alone: 20 points, below the quarantine's 40.
    "okta/user-mfa-factor-reset-all-by-help-desk.json": Decides([]),
    "okta/user-account-report-suspicious-activity-by-enduser.json": Decides([(ALICE, "cut-off")]),
    # ThreatInsight names an address: a peer's reaches its owner; an outside one reaches no one.
    "okta/security-threat-detected-deny-peer-address.json": Decides([(ALICE, "quarantine")]),
    "okta/security-threat-detected-allowed-external-address.json": Decides([]),
    "okta/user-session-impersonation-grant-without-uuid.json": Refused("uuid: Field required"),
    # Graph notifications name resources, not people: read, scored by nothing.
    "graph/change-notification-message-created.json": Decides([]),
    "graph/lifecycle-notification.json": Decides([]),
    "graph/change-notification-encrypted-chat-message.json": Refused("clientState does not match"),
    # Shared Signals.
    "ssf/okta-session-revoked-user-session-end.json": Decides([(ALICE, "quarantine")]),
    "ssf/caep-session-revoked-complex-user-session.json": Decides([(ALICE, "quarantine")]),
    "ssf/caep-session-revoked-user-device.json": Decides([(ALICE, "quarantine")]),
    "ssf/caep-session-revoked-opaque-session.json": Decides([]),  # an opaque session id names no one
    # A revoked or deleted credential is 30 points alone; a created or updated one none.
    "ssf/okta-credential-change-user-mfa-factor-activate.json": Decides([]),
    "ssf/okta-credential-change-user-mfa-factor-deactivate.json": Decides([]),
    "ssf/okta-credential-change-user-mfa-factor-reset-all.json": Decides([]),
    "ssf/okta-credential-change-user-mfa-factor-suspend.json": Decides([]),
    "ssf/okta-credential-change-user-mfa-factor-unsuspend.json": Decides([]),
    "ssf/okta-credential-change-user-mfa-factor-update.json": Decides([]),
    "ssf/okta-credential-change-user-account-reset-password.json": Decides([]),
    "ssf/okta-credential-change-user-account-update-password.json": Decides([]),
    "ssf/caep-credential-change-create.json": Decides([]),
    "ssf/caep-device-compliance-change.json": Decides([]),
    "ssf/caep-risk-level-change-to-low.json": Decides([]),
    "ssf/caep-assurance-level-change.json": Decides([]),
    "ssf/caep-session-established.json": Decides([]),
    "ssf/risc-credential-compromise.json": Decides([(ALICE, "rotate-key")]),  # an admin: awaits approval
    "ssf/risc-account-disabled-hijacking.json": Decides([(ALICE, "offboard")]),
    "ssf/risc-account-disabled-phone-number-subject.json": Decides([]),  # a phone number names no peer's owner
    "ssf/risc-account-credential-change-required.json": Decides([]),
    "ssf/risc-identifier-changed.json": Decides([]),
    "ssf/ssf-verification.json": Decides([]),  # stream control: no event at all
    "ssf/ssf-stream-updated-paused.json": Decides([]),
}


def _load(name: str) -> Any:
    return json.loads((REAL / name).read_text(encoding="utf-8"))


def read(name: str, body: Any | None = None) -> list[Event]:
    """The events of one corpus payload, read as its route reads it (an SSF SET's signature is checked
    by the route's own tests; here its claims are taken as verified)."""
    doc = _load(name) if body is None else body
    source = name.split("/", 1)[0]
    if source == "okta":
        envelope = okta.delivery(doc if "data" in doc else {"data": {"events": [doc]}})
        events, rejected = okta.events_of(envelope)
        if rejected:
            raise PayloadError(rejected[0].reason)
        return events
    if source == "graph":
        # The subscription was made with the clientState the example shows (a record without one is not
        # Graph's whatever the subscription).
        state = next((v["clientState"] for v in doc["value"] if v.get("clientState")), GRAPH_CLIENT_STATE)
        split = entra.notification_events(entra.parse_batch(doc), state, RECEIVED)
        if split.forged or split.rejected:
            raise PayloadError(split.rejected[0].reason if split.rejected else "clientState does not match")
        return split.events
    return ssf.events_of(ssf.VerifiedSet(doc, doc["events"]))


def decide(events: list[Event]) -> list[Decision]:
    engine = Engine(RULES, IdentityMap(INVENTORY))
    return [d for e in events for d in engine.process(e).decisions]


def test_the_table_names_every_payload_of_the_corpus() -> None:
    mine = ("okta", "graph", "ssf")  # the Kafka-borne sources have their table in test_real_payloads_siem.py
    corpus = {str(p.relative_to(REAL)) for p in REAL.rglob("*.json") if p.relative_to(REAL).parts[0] in mine}
    assert corpus == set(EXPECTED)
    everything = list(REAL.rglob("*.json"))
    assert len(everything) >= 40 and len({p.relative_to(REAL).parts[0] for p in everything}) >= 8
    for source in mine:
        assert (REAL / source / "PROVENANCE.md").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_published_payload_is_read_and_scored_as_the_default_policy_says(name: str) -> None:
    expected = EXPECTED[name]
    if isinstance(expected, Refused):
        with pytest.raises(PayloadError, match=expected.reason):
            read(name)
        return
    decisions = decide(read(name))
    assert sorted((d.subject, d.response) for d in decisions) == sorted(expected.decisions)


def test_a_credential_compromise_of_an_admin_awaits_approval() -> None:
    (decision,) = decide(read("ssf/risc-credential-compromise.json"))
    assert decision.requires_approval


# --- Okta: structured debugData and the subject per event type ------------------------------------


def test_okta_behaviors_risk_and_threat_suspected_are_read_as_values() -> None:
    (hook,) = read("okta/session-start-new-device-threat-suspected.json")
    derived = hook.attributes["_okta"]
    assert derived["behaviors"]["New Device"] == "POSITIVE"
    assert derived["behaviors"]["New Geo-Location"] == "NEGATIVE"
    assert derived["threat_suspected"] is True
    assert derived["new_device"] is True

    (lock,) = read("okta/user-account-lock-new-device.json")
    assert lock.attributes["_okta"]["risk"] == {"reasons": "Anomalous Device", "level": "MEDIUM"}
    assert lock.attributes["_okta"]["threat_suspected"] is False

    (log_only,) = read("okta/user-session-start-log-only-security-data.json")  # risk and behaviors as JSON
    assert log_only.attributes["_okta"]["risk"]["level"] == "HIGH"
    assert log_only.attributes["_okta"]["behaviors"]["New Device"] == "BAD_REQUEST"
    assert log_only.attributes["_okta"]["new_device"] is True  # "Anomalous Device" among the risk reasons

    (threat,) = read("okta/security-threat-detected-deny-peer-address.json")
    assert threat.attributes["_okta"]["threat_suspected"] is True

    (plain,) = read("okta/hook-delivery-user-session-start.json")
    assert plain.attributes["_okta"]["new_device"] is False
    assert plain.attributes["_okta"]["behaviors"] == {}


def test_the_values_okta_documents_for_risk_and_behaviors_read_as_maps() -> None:
    # Verbatim from Okta's Identity Threat Protection event reference (docs/reference/api/itp-et/index.md).
    risk = "{previousLevel=LOW, level=MEDIUM, detectionName=Session Influenced User Risk, reasons=idxGuvnnpQKQ8uVw56TGp23Qg, issuer=OKTA}"  # noqa: E501
    behaviors = " { New Geo-Location=POSITIVE, New Device=NEGATIVE, New IP=POSITIVE, New State=POSITIVE, New Country=POSITIVE, Velocity=POSITIVE, New City=POSITIVE } "  # noqa: E501
    assert okta.java_map(risk) == {
        "previousLevel": "LOW",
        "level": "MEDIUM",
        "detectionName": "Session Influenced User Risk",
        "reasons": "idxGuvnnpQKQ8uVw56TGp23Qg",
        "issuer": "OKTA",
    }
    assert okta.java_map(behaviors)["New Device"] == "NEGATIVE"
    assert okta.java_map(behaviors)["New City"] == "POSITIVE"
    event = {"uuid": "u1", "published": "2026-03-02T10:00:00Z", "eventType": "user.risk.change",
             "actor": {"type": "PublicClientApp", "alternateId": "system@okta.com"},
             "target": [{"type": "User", "alternateId": "alice@example.com"}],
             "debugContext": {"debugData": {"Risk": risk, "Behaviors": behaviors}}}  # fmt: skip
    read_back = okta.normalise(event)
    assert read_back.severity.name == "MEDIUM"  # the risk level, matched whatever the key's casing
    assert read_back.subjects.users == ("alice@example.com",)
    assert read_back.attributes["_okta"]["new_device"] is False


@pytest.mark.parametrize(
    "value",
    ["a" * 1_000_000, "a=" + "b, " * 300_000, ("k" * 60 + ",") * 15_000, '{"a":' + "[" * 100_000 + "}"],
    ids=["no-equals", "one-long-value", "many-long-keys", "json-too-deep"],
)
def test_a_hostile_behaviors_string_is_read_in_linear_time(value: str) -> None:
    raw = _log_event("hook-delivery-user-session-start.json")
    raw["debugContext"]["debugData"] |= {"behaviors": value, "risk": value, "logOnlySecurityData": value}
    started = time.perf_counter()
    okta.normalise(raw)
    assert time.perf_counter() - started < 2.0


def test_an_admin_initiated_mfa_reset_names_the_user_reset_not_the_admin() -> None:
    (reset,) = read("okta/user-mfa-factor-reset-all-by-help-desk.json")
    assert reset.attributes["actor"]["alternateId"] == "homer.simpson@duff.com"
    assert reset.subjects.users == ("alice@example.com",)
    assert reset.attributes["_okta"]["subject"] == "target"
    (report,) = read("okta/user-account-report-suspicious-activity-by-enduser.json")
    assert report.subjects.users == ("alice@example.com",)
    assert report.attributes["_okta"]["subject"] == "actor"


def test_threatinsight_names_the_address_it_saw_not_a_user() -> None:
    (outside,) = read("okta/security-threat-detected-allowed-external-address.json")
    assert outside.subjects.users == ()
    assert [str(a) for a in outside.subjects.addresses] == ["1.2.3.4"]
    (peer,) = read("okta/security-threat-detected-deny-peer-address.json")
    assert [str(a) for a in peer.subjects.addresses] == ["10.100.0.10"]


def _reset_before(sign_in: Event, minutes: int) -> Event:
    """The help desk's MFA reset of alice (as published), dated `minutes` before `sign_in`."""
    raw = _load("okta/user-mfa-factor-reset-all-by-help-desk.json")
    raw["published"] = (sign_in.time - timedelta(minutes=minutes)).isoformat()
    return okta.normalise(raw)


@pytest.mark.parametrize(
    "sign_in",
    [
        "okta/session-start-new-device-threat-suspected.json",  # behaviors only: New Device=POSITIVE
        "okta/user-authentication-verify-new-device-risk-high.json",  # behaviors and risk
        "okta/user-session-start-log-only-security-data.json",  # logOnlySecurityData's JSON
    ],
)
def test_a_new_device_sign_in_soon_after_an_mfa_reset_quarantines(sign_in: str) -> None:
    (login,) = read(sign_in)
    decisions = decide([_reset_before(login, 20), login])
    assert [(d.subject, d.response) for d in decisions] == [(ALICE, "quarantine")]


def test_a_known_device_sign_in_after_an_mfa_reset_decides_nothing() -> None:
    (login,) = read("okta/hook-delivery-user-session-start.json")
    assert decide([_reset_before(login, 20), login]) == []


# --- One unusable record costs only itself: over HTTP, into the journal ---------------------------


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[str, Journal]]:
    url = f"sqlite:///{tmp_path}/journal.db"
    s = Settings(
        journal=url,
        okta_secret=OKTA_SECRET,
        entra_client_state=GRAPH_CLIENT_STATE,
        admin_token="admin-token-for-tests",
        inventory=no_hubs(tmp_path),
    )
    async with serving(s) as served:
        yield served


async def _rejections(journal: Journal) -> list[dict[str, Any]]:
    entries = [e for e in await journal.audit_trail() if e.kind == "record.rejected"]
    return [{"ref": e.ref, "actor": e.actor, **json.loads(e.detail)} for e in entries]


async def test_an_okta_delivery_loses_only_its_unusable_events_and_records_each(
    service: tuple[str, Journal],
) -> None:
    base, journal = service
    delivery = _load("okta/hook-delivery-user-session-start.json")
    good = [_load(f"okta/{n}.json") for n in ("user-account-lock-new-device", "user-authentication-auth-via-mfa")]
    broken = {**good[0], "uuid": "no-time", "published": "yesterday"}
    delivery["data"]["events"] = [delivery["data"]["events"][0], "not an event", good[0], broken, good[1]]
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/hooks/okta", json=delivery, headers={"Authorization": OKTA_SECRET}) as r,
    ):
        assert r.status == 200
    uuids = [delivery["data"]["events"][0]["uuid"], good[0]["uuid"], good[1]["uuid"]]
    assert await event_keys(journal) == [f"okta:{u}" for u in uuids]
    rejections = await _rejections(journal)
    ref = f"delivery:okta:{delivery['eventId']}"
    assert [(r["ref"], r["actor"], r["index"], r["id"]) for r in rejections] == [
        (ref, "okta", 1, None),
        (ref, "okta", 3, "no-time"),
    ]
    assert rejections[0]["reason"] == "expected a LogEvent object"
    assert rejections[1]["reason"].startswith("published:")


async def test_a_graph_delivery_loses_only_its_unusable_notifications_and_records_each(
    service: tuple[str, Journal],
) -> None:
    base, journal = service
    (real,) = _load("graph/change-notification-message-created.json")["value"]
    unusable = {**real, "id": "broken-1", "subscriptionId": None}  # genuine (the secret), but not usable
    forged = {**real, "id": "forged-1", "clientState": "guessed", "subscriptionId": None}
    second = {**real, "id": "second"}
    body = {"value": [unusable, real, forged, second]}
    async with aiohttp.ClientSession() as http, http.post(f"{base}/hooks/entra", json=body) as r:
        assert r.status == 202
    assert await event_keys(journal) == ["entra:notification:lsgTZMr9KwAAA", "entra:notification:second"]
    (rejection,) = await _rejections(journal)  # the forged one is dropped, not recorded
    assert rejection["index"] == 0
    assert rejection["id"] == "broken-1"
    assert rejection["reason"].startswith("value.0.subscriptionId")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/metrics", headers={"Authorization": "Bearer admin-token-for-tests"}) as r,
    ):
        metrics = await r.text()
    assert 'responder_deliveries_total{outcome="invalid_event",source="entra"} 1.0' in metrics
    assert 'responder_deliveries_total{outcome="client_state_mismatch",source="entra"} 1.0' in metrics


async def test_the_records_a_batch_lost_go_with_its_delivery_not_with_the_audit_trail(tmp_path: Path) -> None:
    journal = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        received = "2026-03-02T10:00:00+00:00"
        lost = (RejectedRecord(1, "uuid: Field required"), RejectedRecord(4, "expected a LogEvent object", "u-4"))
        await journal.accept_batch([(DeliveryRecord("okta:d1", "okta", received, rejected=lost), [])], "test")
        await journal.audit(received, "admin", "decision.undo", "dec-1", {})
        kept = await journal.audit_trail("delivery:okta:d1")
        assert [json.loads(e.detail) for e in kept] == [
            {"index": 1, "id": None, "reason": "uuid: Field required"},
            {"index": 4, "id": "u-4", "reason": "expected a LogEvent object"},
        ]
        pruned = await journal.prune(events_before="2026-03-05T00:00:00+00:00", decisions_before="2025-01-01")
        assert pruned["audit"] == 2
        assert [e.kind for e in await journal.audit_trail()] == ["decision.undo"]
    finally:
        await journal.close()


# --- The same under mutation: optional fields, nulls, extra fields, time formats, large batches ------

OKTA_EVENTS = sorted(
    p.name for p in (REAL / "okta").glob("*.json") if not isinstance(EXPECTED[f"okta/{p.name}"], Refused)
)
# Every spelling of one instant that Okta and the SIEMs that forward its events are seen to use.
PUBLISHED = [
    "2026-03-02T10:15:29.877Z",
    "2026-03-02T10:15:29Z",
    "2026-03-02T10:15:29.877+00:00",
    "2026-03-02T11:15:29.877+01:00",
    "2026-03-02 10:15:29.877",
    1772446529877,
]
DOCUMENTED = {
    "uuid", "published", "eventtype", "version", "severity", "legacyeventtype", "displaymessage", "actor", "client",
    "device", "authenticationcontext", "securitycontext", "debugcontext", "outcome", "target", "transaction",
    "request", "insertiontimestamp",
}  # fmt: skip


def _log_event(name: str) -> dict[str, Any]:
    doc = _load(f"okta/{name}")
    return copy.deepcopy(doc["data"]["events"][0] if "data" in doc else doc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(OKTA_EVENTS),
    drop=st.sets(st.sampled_from(["actor", "target", "client", "debugContext", "outcome", "severity", "request",
                 "securityContext", "authenticationContext", "displayMessage", "transaction", "legacyEventType",
                 "version"])),
    nulls=st.sets(st.sampled_from(["actor", "target", "client", "debugContext", "outcome", "severity",
                  "securityContext", "transaction"])),
    extra=st.dictionaries(st.text(min_size=1, max_size=12), st.none() | st.integers() | st.text(max_size=20),
                          max_size=4),
    published=st.sampled_from(PUBLISHED),
)  # fmt: skip
def test_an_okta_event_without_its_optional_fields_or_with_more_is_still_read(
    name: str, drop: set[str], nulls: set[str], extra: dict[str, Any], published: str | int
) -> None:
    raw = _log_event(name)
    for key in drop:
        raw.pop(key, None)
    for key in nulls - drop:
        raw[key] = None
    raw |= {k: v for k, v in extra.items() if k.lower() not in DOCUMENTED}  # fields Okta does not define
    raw["published"] = published
    event = okta.normalise(raw)
    assert event.dedup_key == f"okta:{raw['uuid']}"
    whole_second = published == "2026-03-02T10:15:29Z"
    assert event.time == datetime(2026, 3, 2, 10, 15, 29, 0 if whole_second else 877000, UTC)


def _broken(kind: str, base: dict[str, Any]) -> Any:
    return {
        "not an object": ["x"],
        "no uuid": {k: v for k, v in base.items() if k != "uuid"},
        "no eventType": {**base, "uuid": "broken", "eventType": None},
        "bad time": {**base, "uuid": "broken", "published": "2026-13-45T99:99:99Z"},
        "no time": {k: v for k, v in base.items() if k != "published"} | {"uuid": "broken"},
        "long uuid": {**base, "uuid": "u" * 500},
    }[kind]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(st.sampled_from(OKTA_EVENTS), min_size=1, max_size=40),
    size=st.integers(1, 25),
    where=st.integers(0, 10_000),
    kind=st.sampled_from(["not an object", "no uuid", "no eventType", "bad time", "no time", "long uuid"]),
)
def test_a_large_okta_batch_with_one_broken_record_loses_only_that_record(
    names: list[str], size: int, where: int, kind: str
) -> None:
    good = []
    for n, name in enumerate((names * size)[: okta.MAX_EVENTS - 1]):
        raw = _log_event(name)
        raw["uuid"] = f"{raw['uuid']}-{n}"
        good.append(raw)
    at = where % (len(good) + 1)
    records: list[Any] = [*good[:at], _broken(kind, _log_event(names[0])), *good[at:]]
    kept, rejected = okta.events_of(okta.delivery({"data": {"events": records}}))  # no eventTime to fall back on
    assert [r.index for r in rejected] == [at]
    assert [e.dedup_key for e in kept] == [f"okta:{e['uuid']}" for e in good]


def test_an_okta_event_without_published_takes_the_delivery_time() -> None:
    delivery = _load("okta/hook-delivery-user-session-start.json")
    del delivery["data"]["events"][0]["published"]
    (event,), rejected = okta.events_of(okta.delivery(delivery))
    assert rejected == []
    assert event.time == datetime(2023, 3, 28, 17, 3, 37, 93000, UTC)  # the delivery's eventTime


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 999),
    where=st.integers(0, 10_000),
    broken=st.sampled_from([None, "x", {"changeType": "created"}, {"subscriptionId": ""}, {"subscriptionId": 7}]),
    extra=st.dictionaries(st.text(min_size=1, max_size=12), st.none() | st.text(max_size=12), max_size=3),
)
def test_a_large_graph_batch_with_one_broken_notification_loses_only_that_one(
    size: int, where: int, broken: Any, extra: dict[str, Any]
) -> None:
    (real,) = _load("graph/change-notification-message-created.json")["value"]
    records: list[Any] = [{**real, **extra, "id": f"n{i}", "clientState": GRAPH_CLIENT_STATE} for i in range(size)]
    at = where % (size + 1)
    bad = {**broken, "clientState": GRAPH_CLIENT_STATE} if isinstance(broken, dict) else broken
    records.insert(at, bad)
    split = entra.notification_events(entra.parse_batch({"value": records}), GRAPH_CLIENT_STATE, RECEIVED)
    assert [e.id for e in split.events] == [f"n{i}" for i in range(size)]
    if isinstance(broken, dict):  # it carries the secret: Graph's, recorded as rejected
        assert ([r.index for r in split.rejected], split.forged) == ([at], 0)
    else:  # no secret to show: dropped as not Graph's
        assert (split.rejected, split.forged) == ([], 1)


SSF_EVENTS = sorted(p.name for p in (REAL / "ssf").glob("*.json") if p.name != "ssf-verification.json")


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(SSF_EVENTS),
    drop_timestamp=st.booleans(),
    extra=st.dictionaries(st.text(min_size=1, max_size=12), st.none() | st.integers() | st.text(max_size=12),
                          max_size=3),
    stamp=st.sampled_from([1615304991, 1615304991643, 1615304991.5]),
)  # fmt: skip
def test_a_set_without_its_optional_members_or_with_more_is_still_read(
    name: str, drop_timestamp: bool, extra: dict[str, Any], stamp: float
) -> None:
    claims = _load(f"ssf/{name}")
    (body,) = claims["events"].values()
    body.pop("event_timestamp", None)
    if not drop_timestamp:
        body["event_timestamp"] = stamp
    body |= {k: v for k, v in extra.items() if k not in {"subject", "event_timestamp"}}
    (event,) = ssf.events_of(ssf.VerifiedSet(claims, claims["events"]))
    if drop_timestamp:  # the SET's own issue time
        assert event.time == datetime.fromtimestamp(claims["iat"], UTC)
    else:  # seconds or, as Okta sends them, milliseconds
        assert abs(event.time - datetime(2021, 3, 9, 15, 49, 51, tzinfo=UTC)) < timedelta(seconds=1)
