"""A connector's mapping compiled once, at load: direct readers of its paths, and the canonical event
made without a validation pass per field (issue 22: the mapping was ~100 µs of the service's CPU per SIEM
alert, path lookups and pydantic validating and serializing the event).

The connector's own `Connector.events` stays the reference: an alert this path is not sure of (a value
out of an `Event` bound, a time that does not parse, a message of another format, anything that raises)
is read by it, so it is refused with the same reason, and what the two make is the same event
(tests/unit/test_compiled_mapping.py). Such an alert costs both paths' time: bad input costs only itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from responder.core.events import Event, Severity, Source, checked_event
from responder.core.identifiers import IPAddress, distinct_addresses
from responder.ingest.errors import PayloadError
from responder.ingest.paths import first_time, reader, text_reader, texts

if TYPE_CHECKING:
    from responder.ingest.siem import Connector

Read = Callable[[Any], list[Any]]


class CompiledConnector:
    """`connector` as a `Format`: its alerts mapped by readers made once. Pickled (to parser processes)
    as its connector, and compiled again there."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.name = connector.name
        self._match = tuple(
            (reader(path), None if wanted == "any" else frozenset(str(w) for w in wanted))
            for path, wanted in connector.match.items()
        )
        self._any_of = tuple(reader(p) for p in connector.any_of)
        self._ids = tuple(
            text_reader(spec) if isinstance(spec, str) else tuple(text_reader(p) for p in spec) for spec in connector.id
        )
        self._type = text_reader(*connector.type)
        self._title = text_reader(*connector.title)
        self._times = tuple(reader(p) for p in connector.time.paths)
        self._time_format = "iso" if connector.time.format == "auto" else connector.time.format
        self._time_field = f"{connector.name} time"
        self._severities = tuple(reader(p) for p in connector.severity.paths)
        self._grade = connector.severity.grade
        self._severity_default = Severity.parse(connector.severity.default)
        self._users = tuple(reader(p) for p in connector.users)
        self._devices = tuple(reader(p) for p in connector.devices)
        self._addresses = tuple(reader(p) for p in connector.addresses)
        self._host_devices = tuple(reader(p) for p in connector.host.devices)
        self._host_addresses = tuple(reader(p) for p in connector.host.addresses)
        self._dedup_prefix = f"siem:{connector.name}:"

    def __reduce__(self) -> tuple[type[CompiledConnector], tuple[Connector]]:
        return CompiledConnector, (self.connector,)

    def records(self, message: Any) -> list[Any]:
        return self.connector.records(message)

    def events(self, message: Any, raw: bytes, received: datetime | None = None) -> list[Event]:
        """What `Connector.events` gives, made faster; the reference itself for an alert it must judge."""
        try:
            event = self._event(message, raw, received)
        except Exception:  # whatever it is, the reference meets it in its own order and says what it is
            event = None
        return [event] if event is not None else self.connector.events(message, raw, received)

    def _event(self, message: Any, raw: bytes, received: datetime | None) -> Event | None:
        if not isinstance(message, dict):
            return None
        for read, wanted in self._match:
            found = read(message)
            if not found or (wanted is not None and not wanted.intersection(str(v) for v in found)):
                return None
        if self._any_of and not any(read(message) for read in self._any_of):
            return None
        alert_id = self._alert_id(message) or hashlib.sha256(raw).hexdigest()
        kind = self._type(message) or self.connector.type_default
        if kind is None:
            return None
        users = _distinct(u for u in _names(message, self._users) if "@" in u)
        devices = _distinct(_names(message, self._devices))
        addresses = _addresses(_names(message, self._addresses))
        if not (users or devices or addresses):
            devices = _distinct(_names(message, self._host_devices))
            addresses = _addresses(_names(message, self._host_addresses))
        title = self._title(message)
        return checked_event(
            id=alert_id[:256],
            source=Source.SIEM,
            product=self.name,
            type=kind[:512],
            time=self._time(message, received),
            users=users[:16],
            devices=devices[:16],
            addresses=tuple(addresses[:16]),
            severity=self._severity(message),
            attributes={**message, "_title": title} if title else message,
            dedup_key=f"{self._dedup_prefix}{alert_id}"[:512],
        )

    def _alert_id(self, message: Any) -> str | None:
        for spec in self._ids:
            if isinstance(spec, tuple):  # every part present, or this id does not apply
                parts = [read(message) for read in spec]
                found = ":".join(p for p in parts if p) if all(parts) else None
            else:
                found = spec(message)
            if found:
                return found
        return None

    def _time(self, message: Any, received: datetime | None) -> datetime:
        stamps = [v for read in self._times for v in read(message)]
        if not stamps and self.connector.time.missing == "received" and received is not None:
            return received
        if not stamps:
            raise PayloadError(f"{self.name}: no time")  # the reference says which paths
        stamp = stamps[0]
        if self._time_format == "iso" and stamp.__class__ is str and ":" in stamp:
            try:  # `parse_time`'s first step for the common case, without the steps that lead to it
                parsed = datetime.fromisoformat(stamp.strip())
            except ValueError:
                pass
            else:
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return first_time(stamps, self._time_format, field=self._time_field)

    def _severity(self, message: Any) -> Severity:
        for read in self._severities:
            for value in read(message):
                if (grade := self._grade(value)) is not None:
                    return grade
        return self._severity_default


def _names(message: Any, readers: tuple[Read, ...]) -> list[str]:
    """`texts` of each path's values in turn: what the reference reads, path by path."""
    out: list[str] = []
    for read in readers:
        if values := read(message):  # most paths name nobody: no list made for them
            out += texts(values)
    return out


def _distinct(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _addresses(names: list[str]) -> list[IPAddress]:
    return distinct_addresses(names) if names else []
