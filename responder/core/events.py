"""The canonical event: what every connector turns a raw payload into, and all the decision point sees.

Stable contract for connectors: `source` names the family (okta, entra, ssf, siem, hub), `product` the
concrete producer or topic (e.g. "wazuh", "entra-risk-detection"), `type` the producer's own event type
(Okta eventType, Entra riskEventType, SET event URI, SIEM rule id), `time` when it happened (aware),
`subjects` whom it names, `severity` a normalised grade, `attributes` the original payload (JSON), and
`dedup_key` a key equal for redeliveries of the same event (e.g. "okta:<uuid>").
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from functools import cached_property
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from responder.core.identifiers import IPAddress, WireGuardKey, address_text


class Source(StrEnum):
    OKTA = "okta"
    ENTRA = "entra"
    SSF = "ssf"
    SIEM = "siem"
    HUB = "hub"


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | int) -> Severity:
        if isinstance(value, int):
            return cls(value)
        return cls[value.strip().upper()]


def _severity(value: Any) -> Any:
    if isinstance(value, str) and not value.strip().isdigit():
        try:
            return Severity.parse(value)
        except KeyError:
            raise ValueError(f"severity must be one of {[s.name.lower() for s in Severity]}") from None
    return value


SeverityField = Annotated[Severity, BeforeValidator(_severity)]

# Limits on what an event may name, checked where every connector builds its events. An e-mail address
# is at most 254 characters (RFC 5321) and a DNS name 253; nothing genuine comes near 256. Without them,
# one authenticated delivery of 850-character names could hold megabytes of state per thousand subjects.
MAX_IDENTIFIER_CHARS = 256
MAX_SUBJECTS_PER_KIND = 100


def _bounded(kind: str, value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        if len(item) > MAX_IDENTIFIER_CHARS:
            raise ValueError(
                f"a {kind} name of {len(item)} characters is longer than the limit of {MAX_IDENTIFIER_CHARS}"
            )
    return value


class Subjects(BaseModel):
    """Whom an event names. Users are e-mail addresses or UPNs, compared lower-case."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: tuple[str, ...] = Field(default=(), max_length=MAX_SUBJECTS_PER_KIND)
    devices: tuple[str, ...] = Field(default=(), max_length=MAX_SUBJECTS_PER_KIND)
    keys: tuple[WireGuardKey, ...] = Field(default=(), max_length=MAX_SUBJECTS_PER_KIND)
    addresses: tuple[IPAddress, ...] = Field(default=(), max_length=MAX_SUBJECTS_PER_KIND)

    @field_validator("users")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _bounded("user", tuple(dict.fromkeys(u.strip().lower() for u in value if u.strip())))

    @field_validator("devices")
    @classmethod
    def _device_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _bounded("device", value)

    @property
    def empty(self) -> bool:
        return not (self.users or self.devices or self.keys or self.addresses)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    source: Source
    product: str = Field(default="", max_length=128)
    type: str = Field(min_length=1, max_length=512)
    time: AwareDatetime
    subjects: Subjects = Subjects()
    severity: SeverityField = Severity.INFO
    attributes: dict[str, Any] = Field(default_factory=dict)
    dedup_key: str = Field(min_length=1, max_length=512)

    @cached_property
    def epoch(self) -> float:
        return self.time.timestamp()

    @cached_property
    def canonical_json(self) -> str:
        """The event as the journal stores it and the ingest topic carries it: computed once, where the
        event is made (a parser process, when there is one)."""
        return self.model_dump_json()

    def view(self) -> dict[str, Any]:
        """The event as CEL sees it (`event.*` in rule conditions)."""
        return {
            "id": self.id,
            "source": self.source.value,
            "product": self.product,
            "type": self.type,
            "severity": int(self.severity),
            "severity_name": self.severity.name.lower(),
            "users": list(self.subjects.users),
            "devices": list(self.subjects.devices),
            "addresses": [address_text(a) for a in self.subjects.addresses],
            "attributes": self.attributes,
        }
