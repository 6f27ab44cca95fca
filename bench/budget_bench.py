"""Where each microsecond of a Kafka alert goes: CPU per alert, stage by stage.

Each stage of the Kafka path is run here on its own, on the same recorded alerts (the throughput bench's
Wazuh alerts, none of which leads to an action), through the code the service runs, and timed with this
process's CPU clock (`time.process_time`: every thread of the process, so SQLite's thread too; waiting and
the neighbours on a shared machine do not count). Stages in isolation rather than counters inside the
service: the service pays nothing for the measurement, on or off, and each figure is one stage's own. What
isolation cannot show is what the stages cost each other inside one event loop (task switches, caches); the
throughput run's alerts per second against the sum here tells that remainder.

- fetch: the consumer's `getmany` (aiokafka decoding the record batches), from a loopback broker;
- decode: the message's JSON into Python objects (`parse_json`);
- map: the connector's mapping to the canonical event, with its canonical JSON (what the parser computes);
- handback: with parser processes (`parse_workers` ≥ 1; the throughput bench now runs without), the parsed
  events unpickled in the service process; decode and map then run in the parser process, not the service's;
- journal: the hand-off storing each batch of deliveries and events in one transaction (`accept_batch`);
- take: the pipeline reading its pending events (500 at a time, bodies in memory);
- decide: the decision engine on each event;
- mark: the processed marks, one transaction per 500 (`record_outcomes`);
- commit: the consumer's offset commit, one per batch.

The batch path against one at a time, in the same run (`batch_vs_one_by_one`): what the regression guard
compares, as a ratio, never as a time.

    python -m bench.budget_bench [--alerts N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from responder.core.engine import Engine
from responder.core.events import Event
from responder.core.identity import IdentityMap
from responder.ingest.handoff import JournalHandoff, ParsedEvents
from responder.ingest.kafka import SLICE
from responder.ingest.parsers import Parsed
from responder.ingest.payload import parse_json
from responder.ingest.siem import Format, load_connectors
from responder.journal import DeliveryRecord, EventOutcome, Journal, open_journal
from responder.lab.kafka import kafka_broker
from responder.policy import load_rules
from responder.service.service import settle_heap

ROOT = Path(__file__).resolve().parents[1]
OWNER = "bench"
BATCH = SLICE  # what the consumer parses and journals at once
FETCH = 1000  # what it fetches at once: the default of kafka.max_in_flight
PENDING = 500  # what the pipeline takes at once
T = TypeVar("T")
SERVICE_STAGES = ("fetch", "handback", "journal", "take", "decide", "mark", "commit")


def alert(n: int) -> bytes:
    """The throughput bench's alert number `n` (bench/service_bench.py, kafka_throughput)."""
    body = {
        "timestamp": "2026-03-02T10:21:44.018+0000", "id": f"ingest-{n}",
        "rule": {"id": str(5700 + n % 40), "level": 3 + n % 10, "description": "bench"},
        "agent": {"id": "004", "name": "app1"}, "data": {"srcip": f"203.0.{n % 250}.{n % 200 + 1}"},
    }  # fmt: skip
    return json.dumps(body).encode()


class Clock:
    """CPU seconds per stage, summed over the blocks `stage` times."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.process_time()
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.process_time() - started

    def per_alert_us(self, alerts: int) -> dict[str, float]:
        return {name: round(seconds / alerts * 1e6, 1) for name, seconds in self.spent.items()}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def parse_stages(values: Sequence[bytes], fmt: Format, clock: Clock) -> list[Event]:
    """decode, map and handback, each over every alert; the events, as the service would hold them."""
    with clock.stage("decode"):
        messages = [parse_json(v) for v in values]
    received = datetime.now(UTC)
    with clock.stage("map"):
        parsed = [Parsed(events=fmt.events(m, v, received)) for m, v in zip(messages, values, strict=True)]
        for p in parsed:
            for event in p.events:
                _ = event.canonical_json  # the parser computes it too, for the journal's row
    # The parser process pickles a batch's results (its CPU, not the service's); the service unpickles them.
    pickled = [pickle.dumps(list(part)) for part in _chunks(parsed, BATCH)]
    with clock.stage("handback"):
        back: list[Parsed] = [p for blob in pickled for p in pickle.loads(blob)]  # noqa: S301 - our own bytes
    return [e for p in back for e in p.events]


def _deliveries(events: Sequence[Event], topic: str, first: int) -> list[tuple[DeliveryRecord, Sequence[Event]]]:
    now = datetime.now(UTC).isoformat()
    source = f"kafka:{topic}"
    return [(DeliveryRecord(f"{source}:0:{first + n}", source, now, {}), [e]) for n, e in enumerate(events)]


async def journal_stages(journal: Journal, events: Sequence[Event], engine: Engine, clock: Clock) -> None:
    """journal, take, decide, mark: the hand-off, then the pipeline's loop without the executor (these
    alerts decide nothing to enforce)."""
    parsed = ParsedEvents(limit=len(events) + 1)
    handoff = JournalHandoff(journal, OWNER, parsed)
    for offset, part in enumerate(_chunks(events, BATCH)):
        items = _deliveries(part, "budget", offset * BATCH)
        with clock.stage("journal"):
            await handoff.accept_batch(items)
    while True:
        with clock.stage("take"):
            pending = await journal.pending_events(OWNER, limit=PENDING, bodies=False)
            kept = [e for s in pending if (e := parsed.take(s.seq)) is not None]  # as the hand-off kept them
        if not pending:
            break
        assert len(kept) == len(pending), "every event in memory"
        with clock.stage("decide"):
            for event in kept:
                engine.process(event)
        with clock.stage("mark"):
            await journal.record_outcomes([EventOutcome(s.seq) for s in pending], datetime.now(UTC).isoformat())


async def kafka_stages(bootstrap: str, values: Sequence[bytes], clock: Clock) -> None:
    """fetch and commit, through a real consumer group on a loopback broker (its CPU is not counted)."""
    topic = f"budget-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v) for v in values])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}", enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=FETCH, fetch_max_wait_ms=100,
    )  # fmt: skip
    await consumer.start()
    try:
        seen = 0
        while seen < len(values):
            with clock.stage("fetch"):
                batch = await consumer.getmany(timeout_ms=500, max_records=FETCH)
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
            seen += sum(len(r) for r in batch.values())
            if offsets:
                with clock.stage("commit"):
                    await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def batch_vs_one_by_one(workdir: Path, events: Sequence[Event]) -> dict[str, float]:
    """CPU per alert of the journal's batch path (one transaction a batch) against the same alerts one
    delivery and one processed mark per transaction, on fresh journals in the same run: the ratio is what
    the batch shape is worth, whatever the machine's speed."""
    out: dict[str, float] = {}
    for name, size in (("batch", len(events)), ("one_by_one", 1)):
        journal = await open_journal(f"sqlite:///{workdir / f'{name}-{uuid.uuid4().hex[:6]}.db'}")
        try:
            handoff = JournalHandoff(journal, OWNER)
            started = time.process_time()
            for offset, part in enumerate(_chunks(events, size)):
                await handoff.accept_batch(_deliveries(part, name, offset * size))
            pending = await journal.pending_events(OWNER, limit=len(events), bodies=False)
            now = datetime.now(UTC).isoformat()
            for marks in _chunks([EventOutcome(s.seq) for s in pending], size):
                await journal.record_outcomes(marks, now)
            out[f"{name}_us"] = round((time.process_time() - started) / len(events) * 1e6, 1)
        finally:
            await journal.close()
    out["ratio"] = round(out["one_by_one_us"] / out["batch_us"], 1)
    return out


def recorded_events(alerts: int) -> tuple[list[bytes], list[Event]]:
    values = [alert(n) for n in range(alerts)]
    return values, parse_stages(values, load_connectors(ROOT / "connectors")["wazuh"], Clock())


async def run(bootstrap: str | None, alerts: int = 20_000) -> dict[str, Any]:
    """Every stage's CPU per alert (µs) on `alerts` recorded alerts; without a broker, no fetch and commit."""
    fmt = load_connectors(ROOT / "connectors")["wazuh"]
    values = [alert(n) for n in range(alerts)]
    settle_heap()  # as `responder run` does once it has started
    clock = Clock()
    workdir = Path(tempfile.mkdtemp(prefix="responder-budget-"))
    if bootstrap is not None:
        await kafka_stages(bootstrap, values, clock)
    events = parse_stages(values, fmt, clock)
    journal = await open_journal(f"sqlite:///{workdir / 'budget.db'}")
    try:
        engine = Engine(load_rules([ROOT / "rules"]), IdentityMap(None))
        await journal_stages(journal, events, engine, clock)
    finally:
        await journal.close()
    per_alert = clock.per_alert_us(alerts)
    service = sum(per_alert.get(s, 0.0) for s in SERVICE_STAGES)
    in_loop = service - per_alert["handback"] + per_alert["decode"] + per_alert["map"]
    return {
        "stages_us": per_alert,
        # parse_workers ≥ 1: decode and map in the parser process, handback here.
        "service_process_us": round(service, 1),
        # parse_workers 0 (the default, and the throughput bench): decode and map on the event loop, no handback.
        "service_process_no_workers_us": round(in_loop, 1),
        "alerts": alerts,
        "batch": BATCH,
        "batch_vs_one_by_one": await batch_vs_one_by_one(workdir, events[:2000]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description="CPU per Kafka alert, stage by stage (decode, map, journal, decide, mark, commit), on a "
        "loopback broker and a fresh SQLite journal; writes JSON and prints it."
    )
    parser.add_argument("--alerts", type=int, default=20_000, help="recorded alerts each stage runs on")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "budget.json", help="where to write the figures")
    args = parser.parse_args()
    with kafka_broker() as bootstrap:
        report = asyncio.run(run(bootstrap, args.alerts))
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
