"""Published SIEM alerts and Entra ID Protection records (tests/payloads/real/{wazuh,elastic,ocsf,splunk,entra},
each file's origin in its folder's PROVENANCE.md), read as the Kafka consumer reads them: every one parses
as sent or is refused for the reason stated here; every threat decides what the default policy (rules/,
with rules/tests/inventory.yaml) says, every benign one nothing; and in a batch, one unusable record costs
only itself."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responder.core.engine import Engine
from responder.core.events import Event
from responder.core.identity import IdentityMap
from responder.ingest import entra
from responder.ingest.parsers import Parsed, parse_message
from responder.ingest.siem import load_connectors
from responder.inventory import Inventory
from responder.policy import load_rules

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "payloads" / "real"
SOURCES = ("wazuh", "elastic", "ocsf", "splunk", "entra")
FORMATS = load_connectors(ROOT / "connectors")
RULES = load_rules([ROOT / "rules"])
INVENTORY = Inventory.load(ROOT / "rules" / "tests" / "inventory.yaml")
RECEIVED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # the broker's timestamp of every message here


@dataclass(frozen=True)
class Expected:
    file: str
    events: int
    decisions: tuple[tuple[str, str], ...] = ()
    """(subject, response) in the order the engine decides them, the events taken in time order."""
    rejected: tuple[str, ...] = ()
    """Each refused record's (or the message's) reason, a part of it, in order."""


CUT_OFF_ALICE = ("user:alice@example.com", "cut-off")
CUT_OFF_BOB = ("user:bob@example.com", "cut-off")
NO_RECORD = "a diagnostic record needs a category and a properties object"

CORPUS = [
    # Wazuh: rule 87105 (level 12, high) on app1's address quarantines its owner; the rest are below high.
    Expected("wazuh/virustotal-malware-detected.json", 1, (("user:svc-app@example.com", "quarantine"),)),
    Expected("wazuh/virustotal-fim-file-added.json", 1),
    Expected("wazuh/virustotal-no-positives.json", 1),
    Expected("wazuh/virustotal-error-check-credentials.json", 1),
    Expected("wazuh/virustotal-error-rate-limit.json", 1),
    Expected("wazuh/sshd-authentication-failed.json", 1),
    Expected("wazuh/sshd-non-existent-user.json", 1),
    Expected("wazuh/sshd-multiple-authentication-failures.json", 1),
    Expected("wazuh/pam-user-login-failed.json", 1),
    Expected("wazuh/unix-chkpwd-password-check-failed.json", 1),
    # An indexer search hit wraps the alert in _source: not an alert until unwrapped.
    Expected("wazuh/indexer-hit-sshd-5702.json", 0, rejected=("wazuh: rule.level is missing",)),
    Expected("wazuh/indexer-hit-sshd-5706.json", 0, rejected=("wazuh: rule.level is missing",)),
    # A template: rule.id is empty (and the timestamp a placeholder).
    Expected("wazuh/integrations-test-template.json", 0, rejected=("wazuh: none of ['rule.id'] is present",)),
    # Elastic: low-severity threat-match alerts, 7.x and 8.x; each its own event.
    Expected("elastic/signal-7.16-threat-match-security-linux-1.json", 1),
    Expected("elastic/signal-7.16-threat-match-security-linux-2.json", 1),
    Expected("elastic/signal-7.16-threat-match-security-linux-3.json", 1),
    Expected("elastic/alert-8.1-threat-match-security-linux-1.json", 1),
    Expected("elastic/alert-8.1-threat-match-security-linux-3.json", 1),
    # OCSF: findings that name no lab subject; the array is a batch of four.
    Expected("ocsf/okta-detection-finding.json", 1),
    Expected("ocsf/securityhub-guardduty-detection-finding.json", 1),
    Expected("ocsf/prowler-detection-finding.json", 1),
    Expected("ocsf/falco-security-finding.json", 1),
    Expected("ocsf/qradar-offense-security-finding.json", 1),
    Expected("ocsf/securityhub-security-finding.json", 1),
    Expected("ocsf/ssc-malware-findings-batch.json", 4),
    Expected("ocsf/okta-authentication-not-a-finding.json", 0, rejected=("class_uid is 3002",)),
    # Splunk: a stats row without a time and a null search_name is read, dated by its receipt.
    Expected("splunk/webhook-stats-search.json", 1),
    # Splunk ES notables as the notable index returns them: read, informational (no urgency extracted).
    Expected("splunk/notable-excessive-failed-logins.json", 1),
    Expected("splunk/notable-crowdstrike-detection.json", 1),
    # Entra through Event Hubs: alice at high risk (one-digit hour and all) is cut off; bob's medium risk
    # alone does nothing, his high anonymised-IP detection cuts him off.
    Expected("entra/eventhubs-riskyusers.json", 2, (CUT_OFF_ALICE,)),
    Expected("entra/eventhubs-userriskevents.json", 2, (CUT_OFF_BOB, CUT_OFF_ALICE)),
    Expected("entra/eventhubs-userriskevents-detection-ip.json", 1, (CUT_OFF_BOB,)),
    Expected("entra/eventhubs-signinlogs.json", 5),
    Expected("entra/eventhubs-signinlogs-time-corner-cases.json", 0, rejected=(NO_RECORD,) * 11),
    Expected("entra/graph-riskdetections-get.json", 1),  # remediated: info
    Expected("entra/graph-riskyusers-list-schema.json", 0, rejected=("'String (timestamp)' is not a iso time",)),
]


def _raw(name: str) -> bytes:
    return (REAL / name).read_bytes()


def _parse(name: str, raw: bytes | None = None) -> Parsed:
    return parse_message(_raw(name) if raw is None else raw, FORMATS[name.split("/", maxsplit=1)[0]], RECEIVED)


def _decisions(events: list[Event]) -> list[tuple[str, str]]:
    engine = Engine(RULES, IdentityMap(INVENTORY))
    return [(d.subject, d.response) for e in sorted(events, key=lambda e: e.time) for d in engine.process(e).decisions]


def test_the_table_names_every_published_payload() -> None:
    files = {f"{p.parent.name}/{p.name}" for source in SOURCES for p in (REAL / source).glob("*.json")}
    assert files == {case.file for case in CORPUS}
    assert len(files) >= 20
    assert all((REAL / source / "PROVENANCE.md").is_file() for source in SOURCES)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.file)
def test_a_published_payload_parses_as_sent_and_decides_what_the_policy_says(case: Expected) -> None:
    parsed = _parse(case.file)
    assert len(parsed.events) == case.events, parsed.rejected
    assert len(parsed.rejected) == len(case.rejected), parsed.rejected
    for rejected, reason in zip(parsed.rejected, case.rejected, strict=True):
        assert reason in rejected.reason
    assert _decisions(parsed.events) == list(case.decisions)
    for event in parsed.events:  # what the journal stores reads back as it was made
        assert Event.model_validate_json(event.canonical_json) == event


def test_an_entra_time_with_a_one_digit_hour_is_a_time() -> None:
    parsed = _parse("entra/eventhubs-riskyusers.json")
    high = next(e for e in parsed.events if e.subjects.users == ("alice@example.com",))
    assert high.time == datetime(2022, 9, 9, 9, 59, 27, 958000, tzinfo=UTC)
    spray = next(e for e in _parse("entra/eventhubs-userriskevents.json").events if e.type == "passwordSpray")
    assert spray.time == datetime(2022, 9, 9, 8, 48, 50, 361000, tzinfo=UTC)


def test_an_entra_record_without_a_usable_time_of_its_own_takes_the_record_time() -> None:
    body = json.loads(_raw("entra/eventhubs-riskyusers.json"))
    body["records"][1]["properties"]["riskLastUpdatedDateTime"] = "not a time"
    (_, high) = _parse("entra/eventhubs-riskyusers.json", json.dumps(body).encode()).events
    assert high.time == datetime(2022, 9, 9, 9, 59, 27, tzinfo=UTC)  # the record's "9/9/2022 9:59:27 AM"


def _spray_as(kind: str, level: str) -> bytes:
    body = json.loads(_raw("entra/eventhubs-userriskevents.json"))
    record = body["records"][1]
    record["properties"] |= {"riskEventType": kind, "riskLevel": level}
    return json.dumps({"records": [record]}).encode()


@pytest.mark.parametrize("kind", sorted(entra.RISK_EVENT_TYPES))
def test_a_high_level_detection_of_every_documented_kind_is_acted_on(kind: str) -> None:
    (event,) = _parse("entra/eventhubs-userriskevents.json", _spray_as(kind, "high")).events
    assert (event.type, event.product, event.severity.name) == (kind, "entra-riskDetection", "HIGH")
    decided = dict(_decisions([event]))
    assert decided.get("user:alice@example.com") in {"cut-off", "rotate-key"}


def test_a_low_level_detection_of_a_kind_no_rule_names_decides_nothing() -> None:
    (event,) = _parse("entra/eventhubs-userriskevents.json", _spray_as("passwordSpray", "low")).events
    assert _decisions([event]) == []


def test_a_splunk_stats_row_without_time_or_search_name_is_dated_by_its_receipt() -> None:
    (event,) = _parse("splunk/webhook-stats-search.json").events
    assert (event.time, event.type) == (RECEIVED, "splunk-alert")
    assert event.dedup_key.startswith("siem:splunk:") and "scheduler_admin_search" not in event.dedup_key
    # Without the receipt (no broker timestamp) there is no time to give it: refused, with the reason.
    assert (
        "none of ['result._time', 'result.orig_time'"
        in parse_message(_raw("splunk/webhook-stats-search.json"), FORMATS["splunk"]).rejected[0].reason
    )


def test_legacy_elastic_signals_of_one_rule_are_each_their_own_alert() -> None:
    names = [f"elastic/signal-7.16-threat-match-security-linux-{n}.json" for n in (1, 2, 3)]
    events = [e for name in names for e in _parse(name).events]
    rule_id = "62f9a8c0-aac9-11ec-aa31-c9ea2cb79db7"
    assert len({e.dedup_key for e in events}) == 3
    assert all(e.dedup_key != f"siem:elastic:{rule_id}" for e in events)
    # Without a parent, the alert's content names it, still never the rule.
    body = json.loads(_raw(names[0]))
    del body["signal"]["parent"]
    (orphan,) = _parse(names[0], json.dumps(body).encode()).events
    assert rule_id not in orphan.dedup_key


def test_ocsf_times_in_seconds_are_read_as_seconds() -> None:
    (okta,) = _parse("ocsf/okta-detection-finding.json").events
    assert okta.time == datetime(2024, 8, 13, 15, 58, 20, tzinfo=UTC)
    (falco,) = _parse("ocsf/falco-security-finding.json").events  # milliseconds, as the schema says
    assert falco.time == datetime(2023, 1, 3, 15, 11, 39, 558000, tzinfo=UTC)


# -- Property tests: real payloads, mutated -------------------------------------------------------------

# Real single-alert payloads with their own id, and the fields their format cannot do without.
SINGLE = {
    "wazuh/virustotal-malware-detected.json": {"rule", "timestamp", "id"},
    "wazuh/sshd-multiple-authentication-failures.json": {"rule", "timestamp", "id"},
    "elastic/alert-8.1-threat-match-security-linux-1.json": {
        "event.kind", "kibana.alert.uuid", "kibana.alert.rule.rule_id", "@timestamp", "kibana.alert.original_time",
    },
    "elastic/signal-7.16-threat-match-security-linux-2.json": {"event", "signal", "@timestamp"},
    "ocsf/prowler-detection-finding.json": {"class_uid", "finding_info", "time"},
    "ocsf/falco-security-finding.json": {"class_uid", "finding", "time"},
}  # fmt: skip
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.text(max_size=12)


@st.composite
def _mutated(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], set[str]]:
    """A real alert with some optional top-level fields dropped, some nulled, some extra ones added."""
    doc = json.loads(_raw(name))
    optional = sorted(set(doc) - SINGLE[name])
    for key in draw(st.lists(st.sampled_from(optional), unique=True, max_size=len(optional))):
        if draw(st.booleans()):
            del doc[key]
        else:
            doc[key] = None
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in doc), JSON_LEAF, max_size=4))
    return doc | extra, set(extra)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(SINGLE)))
def test_a_real_alert_missing_optional_fields_or_with_nulls_or_extras_reads_the_same(
    data: st.DataObject, name: str
) -> None:
    (original,) = _parse(name).events
    doc, _ = data.draw(_mutated(name))
    parsed = _parse(name, json.dumps(doc).encode())
    assert not parsed.rejected, parsed.rejected
    (event,) = parsed.events
    assert (event.dedup_key, event.type, event.time) == (original.dedup_key, original.type, original.time)


def _renderings(when: datetime) -> list[Any]:
    """One instant as the producers of the corpus write times."""
    utc = when.astimezone(UTC)
    ms = utc.microsecond // 1000
    plus2 = utc.astimezone(timezone(timedelta(hours=2)))
    epoch_ms = (utc - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return [
        f"{utc.year}-{utc.month}-{utc.day}T{utc.hour}:{utc.minute}:{utc.second}.{ms:03d}Z",  # Entra, one digit
        utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}" + "0000Z",  # 7-digit fraction
        plus2.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}+0200",  # Wazuh's offset
        plus2.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}+02:00",
        epoch_ms,  # epoch milliseconds
        str(epoch_ms),
    ]


@settings(max_examples=60, deadline=None, database=None)
@given(
    when=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)),
    style=st.integers(0, 5),
)
def test_a_time_written_any_way_the_producers_write_it_is_the_same_instant(when: datetime, style: int) -> None:
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    body = json.loads(_raw("wazuh/virustotal-malware-detected.json"))
    body["timestamp"] = _renderings(when)[style]
    (event,) = _parse("wazuh/virustotal-malware-detected.json", json.dumps(body).encode()).events
    assert event.time == when
    record = json.loads(_raw("entra/eventhubs-riskyusers.json"))["records"][1]
    record["properties"]["riskLastUpdatedDateTime"] = _renderings(when)[style]
    (risky,) = _parse("entra/eventhubs-riskyusers.json", json.dumps({"records": [record]}).encode()).events
    assert risky.time == when


BROKEN_RECORDS = st.sampled_from([
    None, 7, "text", [], {}, {"category": "RiskyUsers"}, {"category": "RiskyUsers", "properties": "x"},
])  # fmt: skip


def _distinct(record: dict[str, Any], n: int) -> dict[str, Any]:
    out = copy.deepcopy(record)
    out["properties"]["id"] = f"{out['properties']['id']}-{n}"
    return out


@settings(max_examples=40, deadline=None, database=None)
@given(size=st.integers(1, 300), at=st.integers(0, 300), broken=BROKEN_RECORDS, data=st.data())
def test_an_event_hubs_batch_loses_only_its_unusable_record(
    size: int, at: int, broken: Any, data: st.DataObject
) -> None:
    real = json.loads(_raw("entra/eventhubs-riskyusers.json"))["records"]
    records: list[Any] = [_distinct(real[i % 2], i) for i in range(size)]
    at = min(at, size)
    if data.draw(st.booleans()):  # or a real record made unusable: its only times are no times
        broken = _distinct(real[1], -1)
        broken["properties"]["riskLastUpdatedDateTime"] = "String (timestamp)"
        broken["time"] = "later"
    records.insert(at, broken)
    parsed = _parse("entra/eventhubs-riskyusers.json", json.dumps({"records": records}).encode())
    assert len(parsed.events) == size
    assert [r.record for r in parsed.rejected] == [at]
    assert json.loads(parsed.rejected[0].value) == broken
    assert parsed.rejected[0].reason


@settings(max_examples=40, deadline=None, database=None)
@given(size=st.integers(1, 200), at=st.integers(0, 200), name=st.sampled_from(sorted(SINGLE)), data=st.data())
def test_an_array_of_alerts_loses_only_its_unusable_alert(size: int, at: int, name: str, data: st.DataObject) -> None:
    alert = json.loads(_raw(name))
    alerts: list[Any] = [copy.deepcopy(alert) | {"_n": i} for i in range(size)]
    at = min(at, size)
    broken = data.draw(st.sampled_from(["garbage", None, [1], {"just": "a field"}]))
    alerts.insert(at, broken)
    parsed = _parse(name, json.dumps(alerts).encode())
    assert len(parsed.events) == size
    assert [r.record for r in parsed.rejected] == [at]
    assert parsed.rejected[0].reason
