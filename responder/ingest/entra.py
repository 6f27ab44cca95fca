"""Microsoft Entra: Graph change notifications (with their handshake and lifecycle events) and Entra ID
Protection objects — risk detections, risky users, sign-ins — as they come from Graph or, wrapped in
`{"records": [...]}`, from Event Hubs diagnostic settings through Kafka.

Canonical types: a risk detection is typed by its `riskEventType` (`leakedCredentials`, `unlikelyTravel`,
...), a risky user is `riskyUser`, a sign-in is `signIn`, a change notification is `graph.<changeType>` of
its resource; the product says which object it was (`entra-riskDetection`, `entra-riskyUser`,
`entra-signIn`). Severity comes from the risk level (low/medium/high; `hidden` counts as medium, `none`
as info), apart from the type: a risk dismissed, remediated or confirmed safe is info, one confirmed
compromised critical.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from responder.core.events import Event, Severity, Source, Subjects
from responder.ingest.errors import PayloadError
from responder.ingest.paths import first_time, parse_time, text
from responder.journal.records import RejectedRecord

_LEVEL = {"low": Severity.LOW, "medium": Severity.MEDIUM, "high": Severity.HIGH, "hidden": Severity.MEDIUM}
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
REDACTED = "<redacted>"
"""What stands for a secret where a delivery is kept (the journal, a recorded case)."""


class ChangeNotification(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = Field(default=None, max_length=256)
    subscriptionId: str = Field(min_length=1, max_length=256)
    clientState: str | None = Field(default=None, max_length=255)
    changeType: str | None = None
    resource: str | None = None
    lifecycleEvent: str | None = None
    tenantId: str | None = None


class NotificationBatch(BaseModel):
    model_config = ConfigDict(extra="allow")
    value: list[Any] = Field(min_length=1, max_length=1000)


@dataclass(frozen=True, slots=True)
class UnusableNotification:
    """A record of `value[]` that is no notification: where it is, why, and the `clientState` it claims
    (only one that matches makes it Graph's, and worth recording)."""

    index: int
    reason: str
    record_id: str | None
    client_state: str | None

    def client_state_matches(self, expected: str) -> bool:
        return hmac.compare_digest((self.client_state or "").encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Notifications:
    notifications: list[ChangeNotification]
    indexes: list[int]  # where each of `notifications` is in the delivery's `value[]`
    rejected: list[UnusableNotification]


def parse_batch(body: Any) -> Notifications:
    """The notifications of a delivery, each checked on its own: one unusable record costs only itself.
    PayloadError only when the envelope itself is not `{"value": [...]}`."""
    try:
        records = NotificationBatch.model_validate(body).value
    except ValidationError as exc:
        raise PayloadError(_error(exc)) from None
    good: list[ChangeNotification] = []
    indexes: list[int] = []
    bad: list[UnusableNotification] = []
    for n, record in enumerate(records):
        try:
            good.append(ChangeNotification.model_validate(record))
            indexes.append(n)
        except ValidationError as exc:
            fields = record if isinstance(record, dict) else {}
            rid, state = fields.get("id"), fields.get("clientState")
            bad.append(
                UnusableNotification(
                    n, f"value.{n}.{_error(exc)}", rid[:256] if isinstance(rid, str) else None,
                    state if isinstance(state, str) else None,
                )
            )  # fmt: skip
    return Notifications(good, indexes, bad)


@dataclass(frozen=True, slots=True)
class Split:
    """A delivery's notifications sorted out: the events of the genuine ones, each genuine record that is
    unusable with why, and how many were dropped as not Graph's (no matching `clientState`)."""

    genuine: list[ChangeNotification]
    events: list[Event]
    rejected: list[RejectedRecord]
    forged: int


def notification_events(batch: Notifications, client_state: str, received_at: str) -> Split:
    """Only a record that carries the shared secret is Graph's: one without it is dropped as forged, and
    only a genuine one that is unusable is recorded as rejected, so no one else can fill the audit trail."""
    genuine: list[ChangeNotification] = []
    events: list[Event] = []
    rejected: list[RejectedRecord] = []
    forged = 0
    for index, n in zip(batch.indexes, batch.notifications, strict=True):
        if not client_state_matches(n, client_state):
            forged += 1
            continue
        try:
            events.append(notification_event(n, received_at))
        except PayloadError as exc:
            rejected.append(RejectedRecord(index, str(exc), n.id))
            continue
        genuine.append(n)
    for bad in batch.rejected:
        if bad.client_state_matches(client_state):
            rejected.append(RejectedRecord(bad.index, bad.reason, bad.record_id))
        else:
            forged += 1
    rejected.sort(key=lambda r: r.index)
    return Split(genuine, events, rejected, forged)


def parse_notifications(body: Any) -> list[ChangeNotification]:
    """Every notification of a delivery, or PayloadError naming the first unusable one."""
    batch = parse_batch(body)
    if batch.rejected:
        raise PayloadError(batch.rejected[0].reason)
    return batch.notifications


def _error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"


def client_state_matches(notification: ChangeNotification, expected: str) -> bool:
    given = (notification.clientState or "").encode()
    return hmac.compare_digest(given, expected.encode())


def redact_client_state(body: Any) -> Any:
    """The notification batch with every `clientState` (the shared secret) replaced by REDACTED, in
    place; anything else is returned as it is."""
    if isinstance(body, dict) and isinstance(body.get("value"), list):
        for item in body["value"]:
            if isinstance(item, dict) and "clientState" in item:
                item["clientState"] = REDACTED
    return body


def notification_event(n: ChangeNotification, received_at: str) -> Event:
    """A change notification (a user or group changed) or a lifecycle notification, as an event."""
    kind = f"graph.lifecycle.{n.lifecycleEvent}" if n.lifecycleEvent else f"graph.{n.changeType or 'unknown'}"
    key = n.id or f"{n.subscriptionId}:{n.lifecycleEvent or n.changeType}:{n.resource}:{received_at}"
    attributes = n.model_dump(exclude={"clientState"})
    severity = Severity.HIGH if n.lifecycleEvent == "subscriptionRemoved" else Severity.INFO
    try:
        return Event(
            id=key[:256],
            source=Source.ENTRA,
            product="graph",
            type=kind[:512],
            time=parse_time(received_at, field="received_at"),
            severity=severity,
            attributes=attributes,
            dedup_key=f"entra:notification:{key}"[:512],
        )
    except ValidationError as exc:
        raise PayloadError(_error(exc)) from None


# Every `riskEventType` Microsoft documents for riskDetection (Graph v1.0 resource page), for riskUserActivity
# (beta), and in "What are risk detections?" (Entra ID Protection). A detection is typed by its kind; the
# default policy scores any kind by its level and some kinds on their own (rules/identity.yaml), and
# tests/integration/test_real_payloads_siem.py checks that a high-level detection of each one scores.
RISK_EVENT_TYPES = frozenset({
    "adminConfirmedUserCompromised", "anomalousToken", "anomalousUserActivity", "anonymizedIPAddress",
    "attackerinTheMiddle", "attemptedPrtAccess", "generic", "impossibleTravel", "investigationsThreatIntelligence",
    "investigationsThreatIntelligenceSigninLinked", "leakedCredentials", "maliciousIPAddress",
    "maliciousIPAddressValidCredentialsBlockedIP", "malwareInfectedIPAddress", "mcasImpossibleTravel",
    "mcasSuspiciousInboxManipulationRules", "nationStateIP", "newCountry", "passwordSpray", "riskyIPAddress",
    "suspiciousAPITraffic", "suspiciousBrowser", "suspiciousInboxForwarding", "suspiciousIPAddress",
    "suspiciousSendingPatterns", "tokenIssuerAnomaly", "unfamiliarFeatures", "unlikelyTravel",
    "userReportedSuspiciousActivity",
})  # fmt: skip
# A risk an administrator or the user closed is no longer a threat; one confirmed is the worst there is.
_CLOSED = frozenset({"dismissed", "remediated", "confirmedSafe"})


def _kind(obj: dict[str, Any]) -> str:
    """Which Identity Protection object this is, by its shape."""
    if "riskEventType" in obj:
        return "riskDetection"
    if "createdDateTime" in obj and ("status" in obj or "appId" in obj):
        return "signIn"
    if "riskLastUpdatedDateTime" in obj or ("riskLevel" in obj and "userPrincipalName" in obj):
        return "riskyUser"
    raise PayloadError("not an Entra riskDetection, riskyUser or signIn object")


def identity_protection_event(obj: Any, fallback_times: tuple[Any, ...] = (), kind: str | None = None) -> Event:
    """One riskDetection, riskyUser or signIn object (Graph's shape) → one canonical event.

    The event's `type` is the detection's kind (its `riskEventType`; `riskyUser`, `signIn` for the others)
    and its `severity` the risk level, apart: rules score by either. Its time is the first of the object's
    own times that parses, then `fallback_times` (an Event Hubs record's `time`). `kind`, when the
    envelope says it, is trusted over the object's shape."""
    if not isinstance(obj, dict):
        raise PayloadError("expected a JSON object")
    kind = kind or _kind(obj)
    object_id = text(obj, "id")
    if object_id is None:
        raise PayloadError(f"{kind}: id is missing")
    upn = text(obj, "userPrincipalName")
    users = (upn,) if upn and "@" in upn else ()
    if kind == "riskDetection":
        etype = text(obj, "riskEventType") or "riskDetection"
        level = text(obj, "riskLevel")
        times = [obj.get(k) for k in ("detectedDateTime", "activityDateTime", "lastUpdatedDateTime")]
    elif kind == "riskyUser":
        etype, level, times = "riskyUser", text(obj, "riskLevel"), [obj.get("riskLastUpdatedDateTime")]
    else:
        etype = "signIn"
        level = text(obj, "riskLevelDuringSignIn") or text(obj, "riskLevelAggregated")
        times = [obj.get("createdDateTime")]
    severity = _LEVEL.get((level or "").lower(), Severity.INFO)
    state = text(obj, "riskState")
    if state in _CLOSED:
        severity = Severity.INFO
    if state == "confirmedCompromised" or text(obj, "riskDetail") == "adminConfirmedUserCompromised":
        severity = Severity.CRITICAL
    devices = tuple(d for d in [text(obj, "deviceDetail.deviceId")] if d)
    stamp = text(obj, "riskLastUpdatedDateTime", "lastUpdatedDateTime") or ""
    try:
        return Event(
            id=object_id[:256],
            source=Source.ENTRA,
            product=f"entra-{kind}",
            type=etype[:512],
            time=first_time([*times, *fallback_times], field=f"{kind} time"),
            subjects=Subjects(users=users, devices=devices),
            severity=severity,
            attributes=obj,
            # A risky user is one object updated over time: each update is a new event.
            dedup_key=f"entra:{kind}:{object_id}:{stamp}"[:512],
        )
    except ValidationError as exc:
        e = exc.errors()[0]
        raise PayloadError(f"{kind}: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def event_hubs_records(body: Any) -> list[Any]:
    """The records of an Event Hubs diagnostic-settings message, each still in its envelope (`time`,
    `category`, `properties`): each is read on its own (`event_hubs_event`)."""
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise PayloadError('expected {"records": [...]} (Event Hubs diagnostic settings)')
    return list(body["records"])


def is_event_hubs_record(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("properties"), dict) and "category" in obj


def event_hubs_event(record: Any) -> Event:
    """One Event Hubs diagnostic record (UserRiskEvents, RiskyUsers, the sign-in log categories) → its
    event; the record's own `time` is the fallback for the object's."""
    if not is_event_hubs_record(record):
        raise PayloadError("a diagnostic record needs a category and a properties object")
    category = str(record["category"])
    kind = "signIn" if category.endswith("SignInLogs") else _CATEGORY_KIND.get(category)
    return identity_protection_event(record["properties"], fallback_times=(record.get("time"),), kind=kind)


_CATEGORY_KIND = {"UserRiskEvents": "riskDetection", "RiskyUsers": "riskyUser"}
