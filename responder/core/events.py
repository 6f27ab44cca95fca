"""The canonical event: what every connector turns a raw payload into, and all the decision point sees.

Stable contract for connectors: `source` names the family (okta, entra, ssf, siem, hub), `product` the
concrete producer or topic (e.g. "wazuh", "entra-risk-detection"), `type` the producer's own event type
(Okta eventType, Entra riskEventType, SET event URI, SIEM rule id), `time` when it happened (aware),
`subjects` whom it names, `severity` a normalised grade, `attributes` the original payload (JSON), and
`dedup_key` a key equal for redeliveries of the same event (e.g. "okta:<uuid>").

An event's time is bounded by its receipt (`bounded_by_receipt`): a source's clock, or an attacker's
`published: 9999-12-31`, must not move the engine's clock (which only moves forward) for every subject.

An event that exists can be stored and read back: its JSON nests at most `MAX_DEPTH` deep, the depth the
journal's reader accepts, so one payload cannot make the engine's rebuild fail on every start.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from functools import cached_property
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticSerializationError, from_json, to_json

from responder.core.identifiers import IPAddress, WireGuardKey, address_text

# How deep arrays and objects may nest in an event's JSON: the limit of pydantic's JSON reader (jiter),
# which reads events back from the journal (`Event.model_validate_json`) and payloads in at intake
# (`responder.ingest.payload`). One number, checked by tests/unit/test_intake_limits.py against the reader.
MAX_DEPTH = 200
# How far ahead of its receipt an event's own time may lie (clocks drift, senders batch); the default of
# the setting `max_clock_skew_s`.
MAX_CLOCK_SKEW = timedelta(minutes=5)


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
    # Only in the JSON of the events it concerns: the others are stored as they always were.
    claimed_time: AwareDatetime | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="The time the source gave, when it lay too far ahead of the receipt and `time` is the receipt",
    )

    @model_validator(mode="after")
    def _storable(self, info: ValidationInfo) -> Self:
        """Refuse an event whose JSON the journal could not read back. Read back from JSON, it was
        checked by the reader itself; made from a payload, its JSON (needed to store it anyway) is
        made now and read by the same reader only when it has enough brackets to be too deep."""
        if info.mode == "json":
            return self
        too_deep = f"attributes nest deeper than {MAX_DEPTH - 1} levels"
        try:
            text = self.canonical_json
        except PydanticSerializationError as exc:  # the serializer has a depth limit of its own, above ours
            raise ValueError(
                too_deep if "depth" in str(exc) else f"attributes cannot be stored as JSON: {exc}"
            ) from None
        if text.count("{") + text.count("[") > MAX_DEPTH:
            try:
                from_json(text)
            except ValueError:
                raise ValueError(too_deep) from None
        return self

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


def bounded_by_receipt(event: Event, received: datetime, max_skew: timedelta) -> Event:
    """The event, or, when it claims a time more than `max_skew` after `received`, the same event dated
    `received` with its claim kept in `claimed_time` (and shown in the decisions it takes part in)."""
    if event.epoch <= (received + max_skew).timestamp():
        return event
    fields = {name: getattr(event, name) for name in Event.model_fields}
    return Event(**fields | {"time": received, "claimed_time": event.claimed_time or event.time})


_EVENT_GIVEN = frozenset(("id", "source", "product", "type", "time", "subjects", "severity", "attributes", "dedup_key"))
_SUBJECTS_GIVEN = frozenset(("users", "devices", "addresses"))


def checked_event(
    *,
    id: str,
    source: Source,
    product: str,
    type: str,
    time: datetime,
    users: tuple[str, ...],
    devices: tuple[str, ...],
    addresses: tuple[IPAddress, ...],
    severity: Severity,
    attributes: dict[str, Any],
    dedup_key: str,
) -> Event | None:
    """The event `Event(..., subjects=Subjects(users=..., devices=..., addresses=...), ...)` makes of these
    values, made without its validation pass: about half of that constructor's CPU (issue 22; the rest is
    mostly the JSON, which both make).

    Every bound `Event` and `Subjects` enforce is checked here in plain Python and the canonical JSON is
    made as the model makes it (the same serializer, on plain values). None when a value lies outside them
    or is not of the exact type expected, or the JSON has enough brackets to need reading back: `Event(...)`
    then decides, and says what is wrong. tests/unit/test_compiled_mapping.py holds the two equal."""
    if not (
        id.__class__ is str and 1 <= len(id) <= 256
        and source.__class__ is Source
        and product.__class__ is str and len(product) <= 128
        and type.__class__ is str and 1 <= len(type) <= 512
        and time.__class__ is datetime and time.utcoffset() is not None
        and severity.__class__ is Severity
        and attributes.__class__ is dict and _only(_STR, attributes)
        and dedup_key.__class__ is str and 1 <= len(dedup_key) <= 512
        and len(users) <= MAX_SUBJECTS_PER_KIND and _only(_STR, users)
        and len(devices) <= MAX_SUBJECTS_PER_KIND and _only(_STR, devices)
        and (not devices or max(map(len, devices)) <= MAX_IDENTIFIER_CHARS)
        and len(addresses) <= MAX_SUBJECTS_PER_KIND and _only(_ADDRESSES, addresses)
    ):  # fmt: skip
        return None
    if users:
        users = tuple(dict.fromkeys(u.strip().lower() for u in users if u.strip()))  # as Subjects._lower
        if users and max(map(len, users)) > MAX_IDENTIFIER_CHARS:
            return None
    texts = tuple(address_text(a) for a in addresses) if addresses else ()
    plain = {  # enums as their values: the serializer takes ~2 µs to find an enum's, each
        "id": id, "source": source._value_, "product": product, "type": type, "time": time,
        "subjects": {"users": users, "devices": devices, "keys": (), "addresses": texts},
        "severity": severity._value_, "attributes": attributes, "dedup_key": dedup_key,
    }  # fmt: skip
    try:  # the model's own settings: NaN as null, non-ASCII as it is
        text = to_json(plain, inf_nan_mode="null").decode()
    except (PydanticSerializationError, ValueError):
        return None
    if text.count("{") + text.count("[") > MAX_DEPTH:  # as `_storable`: read back there
        return None
    # The same few subjects recur in a stream (one attacker, one host): one frozen instance serves them all,
    # made and unpickled once per parser batch rather than once per alert. Keyed by the addresses' text,
    # which is canonical: the same text is the same address.
    key = (users, devices, texts)
    if (subjects := _SUBJECTS_MADE.get(key)) is None:
        if len(_SUBJECTS_MADE) >= 4096:
            _SUBJECTS_MADE.clear()
        subjects = _built(
            Subjects, {"users": users, "devices": devices, "keys": (), "addresses": addresses}, _SUBJECTS_GIVEN
        )
        _SUBJECTS_MADE[key] = subjects
    fields = {
        "id": id, "source": source, "product": product, "type": type, "time": time, "subjects": subjects,
        "severity": severity, "attributes": dict(attributes), "dedup_key": dedup_key, "claimed_time": None,
        "canonical_json": text,
    }  # fmt: skip
    return _built(Event, fields, _EVENT_GIVEN)


_ADDRESSES = frozenset((IPv4Address, IPv6Address))
_SUBJECTS_MADE: dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], Subjects] = {}
_STR = frozenset((str,))


def _only(types: frozenset[type], values: Collection[Any]) -> bool:
    """Whether every one of `values` is of one of exactly these `types` (no subclass)."""
    return not values or set(map(type, values)) <= types


_Model = TypeVar("_Model", bound=BaseModel)


def _built(model: type[_Model], values: dict[str, Any], given: frozenset[str]) -> _Model:
    """An instance of `model` holding `values` as they are: what `model_construct` does, less its work."""
    made = object.__new__(model)
    object.__setattr__(made, "__dict__", values)
    object.__setattr__(made, "__pydantic_fields_set__", set(given))
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made
