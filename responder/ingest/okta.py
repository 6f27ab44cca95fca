"""Okta event hooks: one delivery holds a batch of System Log events (`data.events[]`).

Each LogEvent becomes one canonical event keyed by its `uuid` (the same event redelivered, in this or
another delivery, is recognised). Users are the actor and targets of type User (`alternateId`, the login).
Severity follows Okta's (DEBUG/INFO → info, WARN → medium, ERROR → high), except Identity Threat Protection
events, whose `debugData.risk` level (LOW/MEDIUM/HIGH) is the severity. `debugData` is not a stable
contract: its keys are matched case-insensitively and its values parsed defensively.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from responder.core.events import Event, Severity, Source, Subjects
from responder.ingest.errors import PayloadError
from responder.ingest.paths import parse_time

_SEVERITY = {"DEBUG": Severity.INFO, "INFO": Severity.INFO, "WARN": Severity.MEDIUM, "ERROR": Severity.HIGH}
_RISK_LEVEL = re.compile(r"(?<![A-Za-z])level\s*[=:]\s*\"?(LOW|MEDIUM|HIGH)", re.IGNORECASE)
_RISK = {"LOW": Severity.LOW, "MEDIUM": Severity.MEDIUM, "HIGH": Severity.HIGH}
MAX_EVENTS = 1000


class _Party(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str | None = None
    alternateId: str | None = None


class _LogEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    uuid: str = Field(min_length=1, max_length=128)
    published: str
    eventType: str = Field(min_length=1, max_length=256)
    severity: str | None = None
    actor: _Party | None = None
    target: list[_Party] | None = None


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow")
    events: list[dict[str, Any]] = Field(max_length=MAX_EVENTS)


class OktaDelivery(BaseModel):
    """The event hook envelope."""

    model_config = ConfigDict(extra="allow")
    eventType: str | None = None
    eventId: str | None = Field(default=None, max_length=128)
    data: _Data


def _risk_severity(raw: dict[str, Any]) -> Severity | None:
    debug = raw.get("debugContext")
    data = debug.get("debugData") if isinstance(debug, dict) else None
    if not isinstance(data, dict):
        return None
    for k, v in data.items():
        if k.lower() == "risk":
            shown = f"level={v.get('level', '')}" if isinstance(v, dict) else str(v)
            match = _RISK_LEVEL.search(shown)
            if match:
                return _RISK[match.group(1).upper()]
    return None


def _users(event: _LogEvent) -> list[str]:
    parties = [event.actor, *(event.target or [])]
    return [p.alternateId for p in parties if p and p.type == "User" and p.alternateId and "@" in p.alternateId]


def parse_delivery(body: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """The delivery id (`eventId`) and the raw LogEvents of a hook delivery."""
    try:
        envelope = OktaDelivery.model_validate(body)
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None
    return envelope.eventId, envelope.data.events


def normalise(raw: dict[str, Any]) -> Event:
    """One System Log event → one canonical event."""
    try:
        event = _LogEvent.model_validate(raw)
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None
    severity = _SEVERITY.get((event.severity or "INFO").upper(), Severity.INFO)
    if event.eventType.startswith(("user.risk.", "user.session.context.change")):
        severity = _risk_severity(raw) or severity
    try:
        subjects = Subjects(users=tuple(_users(event)))
        return Event(
            id=event.uuid,
            source=Source.OKTA,
            product="okta",
            type=event.eventType,
            time=parse_time(event.published, field="published"),
            subjects=subjects,
            severity=severity,
            attributes=raw,
            dedup_key=f"okta:{event.uuid}",
        )
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "body"
    return f"{where}: {e['msg']}"
