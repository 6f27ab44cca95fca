"""Turning Kafka messages into canonical events, in the consumer or in worker processes.

Parsing (JSON, the connector's mapping, the canonical event and the JSON the journal stores) is about half
of the event loop's time per SIEM alert. With `kafka.parse_workers`, worker processes do it on other
cores while the loop journals and decides; each batch is split between them and comes back in order.
A worker that dies costs nothing: its batch is parsed in the consumer and new workers are started.

A message may carry several records (Event Hubs' `{"records": [...]}`, a JSON array of alerts): each is
read on its own, and one that cannot be used is rejected alone, with its reason, not with the rest.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import multiprocessing
import signal
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime

from responder.core.events import Event
from responder.ingest.errors import PayloadError
from responder.ingest.payload import parse_json
from responder.ingest.siem import Format

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record of a message that gave no event, and why: it goes to the dead-letter topic on its own."""

    reason: str
    value: bytes
    """What the dead-letter topic gets: the record's JSON, or the message as it came when `record` is None."""
    record: int | None = None
    """The record's place in the message (`records[2]`); None when the message as a whole is unusable."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one message gave: the events of its usable records, and each record that gave none."""

    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @classmethod
    def refused(cls, reason: str, value: bytes | None) -> Parsed:
        return cls(rejected=[Rejected(reason, value or b"")])

    @property
    def whole_message_refused(self) -> bool:
        """Nothing of the message could be read (not JSON, not the format): it is dead-lettered as it came."""
        return any(r.record is None for r in self.rejected)


def events_of(raw: bytes | None, fmt: Format, received: datetime | None = None) -> list[Event]:
    """The events of one message, or PayloadError saying why one of its records (or the message) has none."""
    parsed = parse_message(raw, fmt, received)
    if parsed.rejected:
        first = parsed.rejected[0]
        where = "" if first.record is None else f"records[{first.record}]: "
        raise PayloadError(f"{where}{first.reason}")
    return parsed.events


def parse_message(raw: bytes | None, fmt: Format, received: datetime | None = None) -> Parsed:
    """The events of one message, record by record: a record that cannot be used costs only itself.
    `received` (the broker's timestamp) is the time of an alert that carries none, where its format says so."""
    if raw is None:
        return Parsed.refused("empty message", raw)
    try:
        message = parse_json(raw)
        records = fmt.records(message)
    except Exception as exc:  # a mapping bug must not stop the partition either
        return Parsed.refused(_reason(exc), raw)
    if len(records) == 1 and records[0] is message:
        try:
            return Parsed(events=_made(fmt.events(message, raw, received)))
        except Exception as exc:
            return Parsed.refused(_reason(exc), raw)
    out = Parsed()
    for index, record in enumerate(records):
        # The record's own bytes: what its content hash (an alert without an id) and the dead-letter
        # topic get; the same record redelivered gives the same bytes.
        value = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            out.events.extend(_made(fmt.events(record, value, received)))
        except Exception as exc:
            out.rejected.append(Rejected(_reason(exc), value, index))
    return out


def _made(events: list[Event]) -> list[Event]:
    for event in events:
        _ = event.canonical_json  # computed here, where it costs the event loop nothing
    return events


def _reason(exc: Exception) -> str:
    """What the dead-letter header says: the payload's problem, or that it met a bug of ours."""
    if isinstance(exc, PayloadError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def parse_all(
    values: Sequence[bytes | None], fmt: Format, received: Sequence[datetime | None] | None = None
) -> list[Parsed]:
    times = received if received is not None else [None] * len(values)
    return [parse_message(raw, fmt, when) for raw, when in zip(values, times, strict=True)]


_formats: Mapping[str, Format] = {}  # in a worker process: its topics' formats


def _start_worker(formats: Mapping[str, Format]) -> None:
    global _formats  # noqa: PLW0603 - one per worker process, set once as it starts
    _formats = formats
    # Die with the service, even when it is killed outright, rather than linger as an orphan.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when to stop


def _parse_in_worker(topic: str, values: list[bytes | None], received: list[datetime | None]) -> list[Parsed]:
    return parse_all(values, _formats[topic], received)


def _ready() -> bool:
    return True


class ParserPool:
    def __init__(self, formats: Mapping[str, Format], workers: int) -> None:
        self._formats = dict(formats)
        self._workers = workers
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(self._formats,),
        )  # fmt: skip

    async def start(self) -> None:
        """Start every worker now (each imports the parsers), not on the first batch."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(self._workers)))

    async def parse(
        self, topic: str, values: list[bytes | None], received: list[datetime | None] | None = None
    ) -> list[Parsed]:
        loop = asyncio.get_running_loop()
        times: list[datetime | None] = received if received is not None else [None] * len(values)
        size = -(-len(values) // self._workers)
        parts = [(values[i : i + size], times[i : i + size]) for i in range(0, len(values), size)]
        try:
            done = await asyncio.gather(
                *(loop.run_in_executor(self._pool, _parse_in_worker, topic, v, t) for v, t in parts)
            )
        except BrokenProcessPool:
            log.error("a parser process died: parsing this batch in the consumer, and starting new ones")  # noqa: TRY400 - no traceback to show
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return parse_all(values, self._formats[topic], times)
        return [parsed for part in done for parsed in part]

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
