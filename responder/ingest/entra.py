"""Microsoft Entra: Graph change notifications (with their handshake and lifecycle events) and Entra ID
Protection objects — risk detections, risky users, sign-ins — as they come from Graph or, wrapped in
`{"records": [...]}`, from Event Hubs diagnostic settings through Kafka.

Canonical types: a risk detection is typed by its `riskEventType` (`leakedCredentials`, `unlikelyTravel`,
...), a risky user is `riskyUser`, a sign-in is `signIn`, a change notification is `graph.<changeType>` of
its resource. Severity comes from the risk level (low/medium/high; `hidden` counts as medium).
"""

from __future__ import annotations

import hmac
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from responder.core.events import Event, Severity, Source, Subjects
from responder.ingest.errors import PayloadError
from responder.ingest.paths import parse_time, text

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
    value: list[ChangeNotification] = Field(min_length=1, max_length=1000)


def parse_notifications(body: Any) -> list[ChangeNotification]:
    try:
        return NotificationBatch.model_validate(body).value
    except ValidationError as exc:
        e = exc.errors()[0]
        raise PayloadError(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}") from None


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
    return Event(
        id=key[:256],
        source=Source.ENTRA,
        product="graph",
        type=kind,
        time=parse_time(received_at, field="received_at"),
        severity=severity,
        attributes=attributes,
        dedup_key=f"entra:notification:{key}"[:512],
    )


def _kind(obj: dict[str, Any]) -> str:
    """Which Identity Protection object this is, by its shape."""
    if "riskEventType" in obj:
        return "riskDetection"
    if "createdDateTime" in obj and ("status" in obj or "appId" in obj):
        return "signIn"
    if "riskLastUpdatedDateTime" in obj or ("riskLevel" in obj and "userPrincipalName" in obj):
        return "riskyUser"
    raise PayloadError("not an Entra riskDetection, riskyUser or signIn object")


def identity_protection_event(obj: Any) -> Event:
    """One riskDetection, riskyUser or signIn object (Graph's shape) → one canonical event."""
    if not isinstance(obj, dict):
        raise PayloadError("expected a JSON object")
    kind = _kind(obj)
    object_id = text(obj, "id")
    if object_id is None:
        raise PayloadError(f"{kind}: id is missing")
    upn = text(obj, "userPrincipalName")
    users = (upn,) if upn and "@" in upn else ()
    if kind == "riskDetection":
        etype = text(obj, "riskEventType") or "riskDetection"
        level = text(obj, "riskLevel")
        when = obj.get("detectedDateTime") or obj.get("activityDateTime")
    elif kind == "riskyUser":
        etype, level, when = "riskyUser", text(obj, "riskLevel"), obj.get("riskLastUpdatedDateTime")
    else:
        etype = "signIn"
        level = text(obj, "riskLevelDuringSignIn") or text(obj, "riskLevelAggregated")
        when = obj.get("createdDateTime")
    severity = _LEVEL.get((level or "").lower(), Severity.INFO)
    if kind == "riskyUser" and text(obj, "riskState") in {"dismissed", "remediated", "confirmedSafe"}:
        severity = Severity.INFO
    if kind == "riskyUser" and text(obj, "riskState") == "confirmedCompromised":
        severity = Severity.CRITICAL
    devices = tuple(d for d in [text(obj, "deviceDetail.deviceId")] if d)
    stamp = text(obj, "riskLastUpdatedDateTime", "lastUpdatedDateTime") or ""
    try:
        return Event(
            id=object_id[:256],
            source=Source.ENTRA,
            product=f"entra-{kind}",
            type=etype,
            time=parse_time(when, field=f"{kind} time"),
            subjects=Subjects(users=users, devices=devices),
            severity=severity,
            attributes=obj,
            # A risky user is one object updated over time: each update is a new event.
            dedup_key=f"entra:{kind}:{object_id}:{stamp}"[:512],
        )
    except ValidationError as exc:
        e = exc.errors()[0]
        raise PayloadError(f"{kind}: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None


_CATEGORY_KIND = {"UserRiskEvents": "riskDetection", "RiskyUsers": "riskyUser"}


def event_hubs_records(body: Any) -> list[Any]:
    """The Identity Protection objects inside an Event Hubs diagnostic-settings message."""
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise PayloadError('expected {"records": [...]} (Event Hubs diagnostic settings)')
    out: list[Any] = []
    for record in body["records"]:
        if not isinstance(record, dict) or not isinstance(record.get("properties"), dict):
            raise PayloadError("records[]: each record needs a properties object")
        props = dict(record["properties"])
        if str(record.get("category") or "").endswith("SignInLogs"):
            props.setdefault("createdDateTime", record.get("time"))
        out.append(props)
    return out
