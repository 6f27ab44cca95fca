"""Okta event hooks: one delivery holds a batch of System Log events (`data.events[]`).

Each LogEvent becomes one canonical event keyed by its `uuid` (the same event redelivered, in this or
another delivery, is recognised). Severity follows Okta's (DEBUG/INFO → info, WARN → medium, ERROR → high),
except Identity Threat Protection events, whose `debugData.risk` level (LOW/MEDIUM/HIGH) is the severity.

The subject is the person the event is about, which is not always its actor: for what an administrator (or
Okta itself) does to a user (an MFA reset by the help desk, a lifecycle change, an ITP risk change, an
impersonation) it is the target User; for what a user does (a sign-in, a report of suspicious activity)
the actor. An event whose actor is an IP address (ThreatInsight's `security.threat.detected`) names that
address, which reaches a person only if it is one of their peers' tunnel addresses.

`debugData` is not a stable contract: its keys are matched case-insensitively, and its Java-map strings
(`behaviors` "{New Device=POSITIVE, ...}", `risk` "{level=HIGH, reasons=...}"), the JSON in
`logOnlySecurityData` and `threatSuspected` "true"/"false" are read into `attributes["_okta"]`
(`behaviors`, `risk`, `threat_suspected`, `new_device`), what the rules match on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from responder.core.events import Event, Severity, Source, Subjects
from responder.core.identifiers import IPAddress, parse_address
from responder.ingest.errors import PayloadError
from responder.ingest.paths import parse_time
from responder.journal.records import RejectedRecord

_SEVERITY = {"DEBUG": Severity.INFO, "INFO": Severity.INFO, "WARN": Severity.MEDIUM, "ERROR": Severity.HIGH}
_RISK = {"LOW": Severity.LOW, "MEDIUM": Severity.MEDIUM, "HIGH": Severity.HIGH}
# A Java map's toString: "{k=v, k=v}". A value may hold commas ("reasons=New Device, New IP"), so a pair
# starts only at a piece that opens with a key (letters, digits, spaces, dashes) and "=". The key's length
# is bounded, so reading a hostile string is linear in its length.
_KEY = re.compile(r"\s*([A-Za-z][\w \-]{0,63}?)\s*=(.*)", re.DOTALL)
_PIECES = re.compile(r",")
MAX_EVENTS = 1000
# Event types in which an administrator, or Okta itself, acts on a user: the target is the one at risk.
_TARGET_IS_SUBJECT = (
    "user.mfa.factor.",
    "user.lifecycle.",
    "user.risk.",
    "user.session.impersonation.",
    "user.session.clear",
    "user.account.lock",
    "user.account.unlock",
    "user.account.reset_password",
    "user.account.privilege.",
    "policy.entity_risk.",
    "security.breached_credential.",
    "group.user_membership.",
)


# A LogEvent's documented members. Some SIEM exports spell them in lower case (`eventtype`, `debugcontext`):
# they are read under Okta's own spelling, unless the event has that too.
_MEMBERS = {
    name.lower(): name
    for name in (
        "uuid", "published", "eventType", "version", "severity", "legacyEventType", "displayMessage", "actor",
        "client", "device", "authenticationContext", "securityContext", "debugContext", "outcome", "target",
        "transaction", "request", "insertionTimestamp",
    )
}  # fmt: skip


def _documented_keys(raw: dict[str, Any]) -> dict[str, Any]:
    renamed = {}
    for key, value in raw.items():
        name = _MEMBERS.get(key.lower(), key) if isinstance(key, str) else key
        renamed[name if name == key or name not in raw else key] = value
    return renamed


class _Party(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Any = None
    type: str | None = None
    alternateId: str | None = None
    displayName: Any = None


class _LogEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    uuid: str = Field(min_length=1, max_length=128)
    published: str | int | None = None
    eventType: str = Field(min_length=1, max_length=256)
    severity: str | None = None
    actor: _Party | None = None
    target: list[_Party] | None = None


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow")
    events: list[Any] = Field(max_length=MAX_EVENTS)


class OktaDelivery(BaseModel):
    """The event hook envelope."""

    model_config = ConfigDict(extra="allow")
    eventType: str | None = None
    eventId: str | None = Field(default=None, max_length=128)
    eventTime: Any = None
    data: _Data


def java_map(text: str) -> dict[str, str]:
    """`"{level=HIGH, reasons=New Device, New IP}"` → `{"level": "HIGH", "reasons": "New Device, New IP"}`;
    a JSON object in the string is read as JSON. Anything else: an empty map."""
    s = text.strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1].strip()
    if s.startswith('"'):
        try:
            data = json.loads("{" + s + "}")
        except (ValueError, RecursionError):  # a string nested deeper than Python's parser goes
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    pairs: dict[str, list[str]] = {}
    value: list[str] | None = None
    for piece in _PIECES.split(s):
        opens = _KEY.match(piece)
        if opens:
            value = pairs[opens.group(1).strip()] = [opens.group(2).strip()]
        elif value is not None:
            value.append(piece.strip())
    return {k: ", ".join(v) for k, v in pairs.items()}


def _debug_data(raw: dict[str, Any]) -> dict[str, Any]:
    debug = raw.get("debugContext")
    if not isinstance(debug, dict):
        return {}
    data = next((v for k, v in debug.items() if str(k).lower() == "debugdata"), None)
    return {str(k).lower(): v for k, v in data.items()} if isinstance(data, dict) else {}


def _as_map(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items() if not isinstance(v, dict | list)}
    if isinstance(value, str):
        return java_map(value)
    return {}


def _security_data(debug: dict[str, Any]) -> dict[str, Any]:
    """`logOnlySecurityData`: the same risk and behaviors, as a JSON string, in newer events."""
    value = debug.get("logonlysecuritydata")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return {}
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else {}


def structured(raw: dict[str, Any]) -> dict[str, Any]:
    """What Okta's untyped `debugData` says about risk, as values: `behaviors` (name → POSITIVE, NEGATIVE,
    UNKNOWN, ...), `risk` (`level`, `reasons`, ...), `threat_suspected` (a bool, or None when not said) and
    `new_device` (a behavior or a risk reason says the device is new)."""
    debug = _debug_data(raw)
    security = _security_data(debug)
    behaviors = _as_map(debug.get("behaviors")) or _as_map(security.get("behaviors"))
    risk = _as_map(debug.get("risk")) or _as_map(security.get("risk"))
    suspected = debug.get("threatsuspected")
    threat = suspected if isinstance(suspected, bool) else {"true": True, "false": False}.get(str(suspected).lower())
    seen = {k.strip().lower(): str(v).strip().upper() for k, v in behaviors.items()}
    reasons = str({k.lower(): v for k, v in risk.items()}.get("reasons", "")).lower()
    new_device = seen.get("new device") == "POSITIVE" or "new device" in reasons or "anomalous device" in reasons
    return {"behaviors": behaviors, "risk": risk, "threat_suspected": threat, "new_device": new_device}


def _risk_severity(risk: dict[str, str]) -> Severity | None:
    level = {k.lower(): v for k, v in risk.items()}.get("level", "")
    return _RISK.get(level.strip().strip('"').upper())


def _login(party: _Party | None) -> str | None:
    if party and party.type == "User" and party.alternateId and "@" in party.alternateId:
        return party.alternateId
    return None


def _address(party: _Party | None) -> IPAddress | None:
    """The address an actor is, when the actor is one (ThreatInsight: `type` "IP address", the address as
    `id` or `displayName`)."""
    if party is None or (party.type or "").lower().replace("_", " ") not in {"ip address", "ip"}:
        return None
    for candidate in (party.id, party.alternateId, party.displayName):
        if not isinstance(candidate, str):
            continue
        try:
            return parse_address(candidate)
        except ValueError:
            continue
    return None


def subjects_of(event: _LogEvent) -> Subjects:
    """The person (or address) the event is about; see the module's docstring."""
    targets = [u for u in (_login(t) for t in event.target or []) if u]
    if event.eventType.startswith(_TARGET_IS_SUBJECT) and targets:
        return Subjects(users=tuple(dict.fromkeys(targets)))
    actor = _login(event.actor)
    if actor:
        return Subjects(users=(actor,))
    address = _address(event.actor)
    if address is not None:
        return Subjects(addresses=(address,))
    return Subjects(users=tuple(dict.fromkeys(targets)))


def parse_delivery(body: Any) -> tuple[str | None, list[Any]]:
    """The delivery id (`eventId`) and the raw LogEvents of a hook delivery."""
    envelope = delivery(body)
    return envelope.eventId, envelope.data.events


def delivery(body: Any) -> OktaDelivery:
    """The hook delivery's envelope, or PayloadError. Its events are checked one by one (`normalise`)."""
    try:
        return OktaDelivery.model_validate(body)
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None


def events_of(envelope: OktaDelivery) -> tuple[list[Event], list[RejectedRecord]]:
    """Every usable LogEvent of a delivery as an event, and each unusable one with why: one bad record
    costs only itself."""
    events: list[Event] = []
    rejected: list[RejectedRecord] = []
    fallback = envelope.eventTime if isinstance(envelope.eventTime, str) else None
    for n, raw in enumerate(envelope.data.events):
        try:
            events.append(normalise(raw, fallback_time=fallback))
        except PayloadError as exc:
            uid = raw.get("uuid") if isinstance(raw, dict) else None
            rejected.append(RejectedRecord(n, str(exc), uid[:128] if isinstance(uid, str) else None))
    return events, rejected


def _time(published: str | int | None, fallback: str | None) -> Any:
    if isinstance(published, int):  # epoch milliseconds, as some exports write it
        return parse_time(published, "epoch_ms", field="published")
    if published is not None:
        return parse_time(published, field="published")
    if fallback is not None:  # a LogEvent without `published`: the delivery's own time
        return parse_time(fallback, field="eventTime")
    raise PayloadError("published: Field required")


def normalise(raw: Any, fallback_time: str | None = None) -> Event:
    """One System Log event → one canonical event. `fallback_time` (the delivery's `eventTime`) dates an
    event that has no `published`."""
    if not isinstance(raw, dict):
        raise PayloadError("expected a LogEvent object")
    raw = _documented_keys(raw)
    if raw.get("published") is None and fallback_time is None:
        raise PayloadError("published: Field required")
    try:
        event = _LogEvent.model_validate(raw)
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None
    severity = _SEVERITY.get((event.severity or "INFO").upper(), Severity.INFO)
    derived = structured(raw)
    if event.eventType.startswith(("user.risk.", "user.session.context.change", "policy.entity_risk.")):
        severity = _risk_severity(derived["risk"]) or severity
    derived["subject"] = "target" if event.eventType.startswith(_TARGET_IS_SUBJECT) else "actor"
    try:
        return Event(
            id=event.uuid,
            source=Source.OKTA,
            product="okta",
            type=event.eventType,
            time=_time(event.published, fallback_time),
            subjects=subjects_of(event),
            severity=severity,
            attributes={**raw, "_okta": derived},
            dedup_key=f"okta:{event.uuid}",
        )
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "body"
    return f"{where}: {e['msg']}"
