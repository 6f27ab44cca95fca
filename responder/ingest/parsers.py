"""Turning Kafka messages into canonical events, in the consumer or in worker processes.

Parsing (JSON, the connector's mapping, the canonical event and the JSON the journal stores) is about half
of the event loop's time per SIEM alert. With `kafka.parse_workers`, worker processes do it on other
cores while the loop journals and decides; each batch is split between them and comes back in order.
A worker that dies costs nothing: its batch is parsed in the consumer and new workers are started.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import signal
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from responder.core.events import Event
from responder.ingest.errors import PayloadError
from responder.ingest.payload import parse_json
from responder.ingest.siem import Format

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1

Parsed = list[Event] | str  # a message's events, or why it has none (it goes to the dead-letter topic)


def events_of(raw: bytes | None, fmt: Format) -> list[Event]:
    """The events of one message, or PayloadError saying why there are none."""
    if raw is None:
        raise PayloadError("empty message")
    return fmt.events(parse_json(raw), raw)


def parse_all(values: Sequence[bytes | None], fmt: Format) -> list[Parsed]:
    out: list[Parsed] = []
    for raw in values:
        try:
            events = events_of(raw, fmt)
        except PayloadError as exc:
            out.append(str(exc))
            continue
        except Exception as exc:  # a mapping bug must not stop the partition
            out.append(f"internal error: {type(exc).__name__}: {exc}")
            continue
        for event in events:
            _ = event.canonical_json  # computed here, where it costs the event loop nothing
        out.append(events)
    return out


_formats: Mapping[str, Format] = {}  # in a worker process: its topics' formats


def _start_worker(formats: Mapping[str, Format]) -> None:
    global _formats  # noqa: PLW0603 - one per worker process, set once as it starts
    _formats = formats
    # Die with the service, even when it is killed outright, rather than linger as an orphan.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when to stop


def _parse_in_worker(topic: str, values: list[bytes | None]) -> list[Parsed]:
    return parse_all(values, _formats[topic])


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

    async def parse(self, topic: str, values: list[bytes | None]) -> list[Parsed]:
        loop = asyncio.get_running_loop()
        size = -(-len(values) // self._workers)
        parts = [values[i : i + size] for i in range(0, len(values), size)]
        try:
            done = await asyncio.gather(*(loop.run_in_executor(self._pool, _parse_in_worker, topic, p) for p in parts))
        except BrokenProcessPool:
            log.error("a parser process died: parsing this batch in the consumer, and starting new ones")  # noqa: TRY400 - no traceback to show
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return parse_all(values, self._formats[topic])
        return [parsed for part in done for parsed in part]

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
