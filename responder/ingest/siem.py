"""SIEM alert formats: declarative mappings from `connectors/*.yaml`, plus Entra through Event Hubs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from responder.core.events import Event, Severity, Source, Subjects
from responder.core.identifiers import IPAddress, distinct_addresses
from responder.ingest import entra
from responder.ingest.compiled import CompiledConnector
from responder.ingest.errors import PayloadError
from responder.ingest.paths import first_time, lookup, text, texts

SeverityName = Literal["info", "low", "medium", "high", "critical"]
Paths = tuple[str, ...]


class Format(Protocol):
    @property
    def name(self) -> str: ...

    def records(self, message: Any) -> list[Any]:
        """The records a message carries, each read on its own by `events` (a message of one alert: the
        message itself, `[message]`); PayloadError when the message is not this format at all."""
        ...

    def events(self, message: Any, raw: bytes, received: datetime | None = None) -> list[Event]:
        """The events of one record (`raw`: its bytes); `received`: when the broker got it, the time of an
        alert that carries none where the format says so. PayloadError says why the record gives none."""
        ...


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeSpec(_Spec):
    paths: Paths = Field(min_length=1)
    format: Literal["iso", "epoch_s", "epoch_ms", "auto"] = "auto"
    missing: Literal["reject", "received"] = Field(
        default="reject",
        description="An alert with none of `paths`: refused, or dated when the broker received it",
    )


class SeveritySpec(_Spec):
    paths: Paths = Field(min_length=1)
    map: dict[str, SeverityName] = {}
    ranges: dict[SeverityName, float] = {}
    default: SeverityName = "info"

    @field_validator("map", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else value

    @cached_property
    def steps(self) -> tuple[tuple[float, Severity], ...]:
        """`ranges` as (lowest, grade), highest first: the first one a value reaches is its grade."""
        return tuple(sorted(((low, Severity.parse(g)) for g, low in self.ranges.items()), key=lambda s: -s[0]))

    @cached_property
    def grades(self) -> dict[str, Severity]:
        return {text: Severity.parse(grade) for text, grade in self.map.items()}

    def grade(self, value: Any) -> Severity | None:
        """The grade one value found at a severity path gives (`map` first, then `ranges`), if any."""
        if self.map and (grade := self.grades.get(str(value).lower())) is not None:
            return grade
        if self.ranges and (isinstance(value, int | float) or _is_number(str(value))):
            number = float(value)
            for lowest, step in self.steps:
                if number >= lowest:
                    return step
        return None


class HostSpec(_Spec):
    """The host that reported the alert: a subject only when the alert names no other. In a brute-force
    alert the reporting host is the victim and the source address the suspect; in a malware alert the
    host is all there is."""

    devices: Paths = ()
    addresses: Paths = ()


class Connector(_Spec):
    """One SIEM format's mapping to the canonical event (see connectors/README.md)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    description: str = ""
    match: dict[str, Literal["any"] | list[str | int]] = {}
    any_of: Paths = Field(default=(), description="At least one of these paths is present (one format, two shapes)")
    id: tuple[str | tuple[str, ...], ...] = Field(
        default=(),
        description="Paths to the alert's own id, first found wins; a list of paths is one id made of all of them",
    )
    type: Paths = ()
    type_default: str | None = None
    title: Paths = ()
    time: TimeSpec
    severity: SeveritySpec
    users: Paths = ()
    addresses: Paths = ()
    devices: Paths = ()
    host: HostSpec = HostSpec()

    def records(self, message: Any) -> list[Any]:
        """A JSON array is a batch of alerts (an integrator that ships several at once), each its own
        record; an object is one alert."""
        if isinstance(message, list):
            if not message:
                raise PayloadError(f"{self.name}: an empty array holds no alert")
            return message
        if not isinstance(message, dict):
            raise PayloadError(f"{self.name}: expected a JSON object (one alert) or an array of them")
        return [message]

    def events(self, message: Any, raw: bytes, received: datetime | None = None) -> list[Event]:
        if not isinstance(message, dict):
            raise PayloadError(f"{self.name}: expected a JSON object")
        for path, wanted in self.match.items():
            found = lookup(message, path)
            if not found:
                raise PayloadError(f"{self.name}: {path} is missing")
            if wanted != "any" and not {str(v) for v in found} & {str(w) for w in wanted}:
                raise PayloadError(f"{self.name}: {path} is {found[0]!r}, expected one of {wanted}")
        if self.any_of and not any(lookup(message, p) for p in self.any_of):
            raise PayloadError(f"{self.name}: none of {list(self.any_of)} is present")
        alert_id = self._alert_id(message) or hashlib.sha256(raw).hexdigest()
        kind = text(message, *self.type) or self.type_default
        if kind is None:
            raise PayloadError(f"{self.name}: none of {list(self.type)} is present")
        when = self._time(message, received)
        users = tuple(dict.fromkeys(u for p in self.users for u in texts(lookup(message, p)) if "@" in u))
        devices = _devices(message, self.devices)
        addresses = _addresses(message, self.addresses)
        if not (users or devices or addresses):
            devices, addresses = _devices(message, self.host.devices), _addresses(message, self.host.addresses)
        title = text(message, *self.title)
        try:
            return [
                Event(
                    id=alert_id[:256],
                    source=Source.SIEM,
                    product=self.name,
                    type=kind[:512],
                    time=when,
                    subjects=Subjects(users=users[:16], devices=devices[:16], addresses=tuple(addresses[:16])),
                    severity=self._severity(message),
                    attributes={**message, "_title": title} if title else message,
                    dedup_key=f"siem:{self.name}:{alert_id}"[:512],
                )
            ]
        except ValidationError as exc:
            e = exc.errors()[0]
            raise PayloadError(f"{self.name}: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None

    def _alert_id(self, message: Any) -> str | None:
        for spec in self.id:
            if isinstance(spec, str):
                found = text(message, spec)
            else:  # every part present, or this id does not apply
                parts = [text(message, p) for p in spec]
                found = ":".join(p for p in parts if p) if all(parts) else None
            if found:
                return found
        return None

    def _time(self, message: Any, received: datetime | None) -> datetime:
        """The first of the time paths that holds a time: a producer that writes one field oddly (or
        leaves it empty) often has the time in the next."""
        stamps = [v for p in self.time.paths for v in lookup(message, p)]
        if not stamps and self.time.missing == "received" and received is not None:
            return received
        fmt = self.time.format
        if not stamps:
            raise PayloadError(f"{self.name}: none of {list(self.time.paths)} is present")
        return first_time(stamps, "iso" if fmt == "auto" else fmt, field=f"{self.name} time")

    def _severity(self, message: Any) -> Severity:
        spec = self.severity
        for path in spec.paths:
            for value in lookup(message, path):
                if (grade := spec.grade(value)) is not None:
                    return grade
        return Severity.parse(spec.default)


def _devices(message: Any, paths: Paths) -> tuple[str, ...]:
    return tuple(dict.fromkeys(d for p in paths for d in texts(lookup(message, p))))


def _addresses(message: Any, paths: Paths) -> list[IPAddress]:
    return distinct_addresses(value for p in paths for value in texts(lookup(message, p)))


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


class EntraEventHubs:
    """Entra ID Protection objects from Event Hubs diagnostic settings (`{"records": [...]}`), a page of
    Graph objects (`{"value": [...]}`, as Graph lists them), each record read on its own; or one Graph
    object per message."""

    name = "entra"

    def records(self, message: Any) -> list[Any]:
        if isinstance(message, dict) and "records" in message:
            return entra.event_hubs_records(message)
        if isinstance(message, dict) and isinstance(message.get("value"), list) and "id" not in message:
            return list(message["value"])
        return [message]

    def events(self, message: Any, raw: bytes, received: datetime | None = None) -> list[Event]:
        del raw, received
        if isinstance(message, dict) and "records" in message:  # a whole message, read at once
            return [entra.event_hubs_event(r) for r in entra.event_hubs_records(message)]
        if isinstance(message, dict) and "category" in message:  # a diagnostic record, maybe a broken one
            return [entra.event_hubs_event(message)]
        return [entra.identity_protection_event(message)]


class ConnectorError(Exception):
    """A connector file does not load; the message says which file and what is wrong."""


def load_connectors(directory: Path) -> dict[str, Format]:
    formats: dict[str, Format] = {"entra": EntraEventHubs()}
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            connector = Connector.model_validate(data)
        except yaml.YAMLError as exc:
            raise ConnectorError(f"{path}: not valid YAML: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConnectorError(f"{path}: {problems}") from None
        if connector.name != path.stem:
            raise ConnectorError(f"{path}: name {connector.name!r} must match the file name {path.stem!r}")
        formats[connector.name] = CompiledConnector(connector)
    return formats


def formats_for(topics: Mapping[str, str], formats: Mapping[str, Format]) -> dict[str, Format]:
    """Topic → format, refusing a topic whose format is unknown."""
    out = {}
    for topic, name in topics.items():
        if name not in formats:
            raise ConnectorError(f"topic {topic}: unknown format {name!r}; known: {sorted(formats)}")
        out[topic] = formats[name]
    return out
