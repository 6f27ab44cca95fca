"""SIEM alerts from Kafka: a consumer group with manual commits.

A batch (bounded by `max_in_flight`: backpressure, bounded memory) is taken in slices of a few hundred
records. Each slice is parsed, its events handed off durably in one journal transaction, the unusable
messages (and the unusable records of messages that carry several, each on its own) written to the
dead-letter topic with the reason in a header, and only then are its offsets committed. A crash at any
point redelivers, never loses: the journal's de-duplication keys turn redelivery into a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer

from responder.core.events import Event
from responder.ingest.handoff import Handoff
from responder.ingest.parsers import Parsed, ParserPool, Rejected, events_of, parse_all
from responder.ingest.siem import Format
from responder.ingest.webhooks import DeliveryRecorder
from responder.journal import Accepted, DeliveryRecord, JournalUnavailable
from responder.telemetry.metrics import Metrics
from responder.telemetry.tracing import carrier_of_current, context_from

log = logging.getLogger(__name__)
Batch = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
TRACE_HEADERS = ("traceparent", "tracestate")
_NO_TRACE: dict[str, str] = {}  # shared, never written to: a delivery's trace when tracing is off


@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap_servers: str
    group_id: str
    topics: Mapping[str, Format]
    dead_letter_topic: str
    max_in_flight: int = 1000
    client_options: Mapping[str, Any] | None = None  # security_protocol, sasl_* for Event Hubs and the like
    listener: Any = None  # an aiokafka ConsumerRebalanceListener, told of partition assignments
    parse_workers: int = 0  # processes that parse messages beside the event loop (0: the loop parses)


# Records handled at once: the event loop parses a slice (without parser processes) and the journal stores
# it in one transaction, so a webhook's cut-off waits for at most one slice's work, a few milliseconds,
# never for a whole fetch of `max_in_flight`; beyond a few hundred rows a transaction saves little more.
SLICE = 250
PARSE_TURN = 50  # messages parsed between two turns of the event loop (~2 ms)


def slices(batch: Batch, size: int) -> list[Batch]:
    """The batch in parts of at most `size` records, each partition's records in order."""
    out: list[Batch] = []
    part: dict[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]] = {}
    room = size
    for tp, records in batch.items():
        start = 0
        while start < len(records):
            taken = records[start : start + room]
            part[tp] = taken
            start += len(taken)
            room -= len(taken)
            if room == 0:
                out.append(part)
                part, room = {}, size
    if part:
        out.append(part)
    return out


def _headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    out = {}
    for key, value in record.headers or ():
        if key.lower() in TRACE_HEADERS and isinstance(value, bytes):
            out[key.lower()] = value.decode("ascii", "replace")[:512]
    return out


def parse(record: ConsumerRecord[bytes, bytes], fmt: Format) -> list[Event]:
    """The events of one message, or PayloadError saying why one of its records (or the message) has none."""
    return events_of(record.value, fmt, _received(record))


def _received(record: ConsumerRecord[bytes, bytes]) -> datetime | None:
    """When the broker got the message (its timestamp, in milliseconds), if it says."""
    if not isinstance(record.timestamp, int) or record.timestamp <= 0:
        return None
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


class AlertConsumer:
    def __init__(
        self,
        config: ConsumerConfig,
        handoff: Handoff,
        metrics: Metrics,
        tracer: Tracer | None = None,
        recorder: DeliveryRecorder | None = None,
    ) -> None:
        self._recorder = recorder
        self.config = config
        self._handoff = handoff
        self._metrics = metrics
        self._tracer = tracer or trace.NoOpTracer()
        self._traced = not isinstance(self._tracer, trace.NoOpTracer)
        self.committed = 0
        self.partitions: Any = None  # the consumer's partitions_for_topic, once it runs
        self._parsers: ParserPool | None = None
        self.connected = False  # joined the group and consuming: for /readyz

    async def keep_running(self, max_pause_s: float = 60.0) -> None:
        """`run`, started again after each failure to reach or authenticate with the brokers (a wrong CA, a
        wrong password, a broker down), with one error line a failure, so the webhooks go on serving while
        Kafka cannot be had; `connected` says which it is."""
        pause = 1.0
        while True:
            try:
                await self.run()
            # ssl.SSLError is an OSError; aiokafka's SCRAM client raises KeyError("v") when the broker
            # refuses the proof.
            except (KafkaError, OSError, KeyError) as exc:
                self.connected = False
                # One line, not a traceback: the cause is a setting or the broker, not this code.
                log.error(  # noqa: TRY400
                    "kafka %s: %s; trying again in %.0fs", self.config.bootstrap_servers, await self._why(exc), pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, max_pause_s)

    async def _why(self, exc: BaseException) -> str:
        """What to change: aiokafka says only "Unable to bootstrap", so where TLS is on, a handshake of our
        own with the same context tells a refused certificate (wrong CA, name mismatch) from the rest."""
        options = self.config.client_options or {}
        mechanism = options.get("sasl_mechanism")
        said = "the broker refused the SCRAM proof" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
        context = options.get("ssl_context")
        if isinstance(context, ssl.SSLContext) and (
            refused := await tls_refusal(self.config.bootstrap_servers, context, said)
        ):
            return refused
        if mechanism and (refused := await sasl_refusal(self.config.bootstrap_servers, options)):
            return refused
        if mechanism:
            return f"{said}: check kafka.sasl_username and kafka_password ({mechanism}) if the broker is up"
        return said

    async def run(self, ready: asyncio.Event | None = None) -> None:
        c = self.config
        options = dict(c.client_options or {})
        consumer = AIOKafkaConsumer(
            bootstrap_servers=c.bootstrap_servers, group_id=c.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=c.max_in_flight, request_timeout_ms=15000,
            fetch_max_wait_ms=100,  # an alert waits at most this long in a broker that does not wake fetches
            **options,
        )  # fmt: skip
        producer = AIOKafkaProducer(bootstrap_servers=c.bootstrap_servers, request_timeout_ms=15000, **options)
        # Both clients are stopped on every way out, a failed start too: `keep_running` makes new ones.
        try:
            if c.parse_workers:
                self._parsers = ParserPool(c.topics, c.parse_workers)
                await self._parsers.start()
            await producer.start()
            consumer.subscribe(list(c.topics), listener=c.listener)
            self.partitions = consumer.partitions_for_topic  # the listener may be told during start()
            await consumer.start()
            self.connected = True
            if ready is not None:
                ready.set()
            await self._pipelined(consumer, producer)
        finally:
            self.connected = False
            await consumer.stop()
            await producer.stop()
            if self._parsers is not None:
                await self._parsers.close()
                self._parsers = None

    async def _pipelined(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        """The next slice is fetched and parsed while this one is journaled and committed (in order, one
        at a time): the event loop parses while the journal's thread writes (or, with parser processes,
        is not idle while a worker parses). At most three slices are in hand: one parsing, one waiting,
        one being stored, beside the rest of the fetch they came in."""
        parsed: asyncio.Queue[tuple[Batch, list[list[Parsed]]]] = asyncio.Queue(maxsize=1)

        async def fetch_and_parse() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=self.config.max_in_flight)
                for part in slices(batch, SLICE):
                    await parsed.put((part, await self._parse(part)))

        async def store() -> None:
            while True:
                await self._process(consumer, producer, *await parsed.get())

        async with asyncio.TaskGroup() as group:
            group.create_task(fetch_and_parse())
            group.create_task(store())

    async def _parse(self, batch: Batch) -> list[list[Parsed]]:
        """Per partition of the batch, each message's events or why it has none."""
        return list(await asyncio.gather(*(self._parse_part(tp.topic, records) for tp, records in batch.items())))

    async def _process(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        batch: Batch,
        parsed: list[list[Parsed]],
    ) -> None:
        items, recorded, dead = self._sorted(batch, parsed)
        if items:
            accepted = await self._stored(items)
            counts: dict[str, list[int]] = {}
            for (delivery, _), a in zip(items, accepted, strict=True):
                c = counts.setdefault(delivery.source, [0, 0, 0])
                c[0] += a.new
                c[1] += a.duplicates
                c[2] += 1
            for source, (new, duplicates, deliveries) in counts.items():
                self._metrics.events.labels(source).inc(new)
                self._metrics.duplicates.labels(source).inc(duplicates)
                self._metrics.deliveries.labels(source, "accepted").inc(deliveries)
            if self._recorder is not None:
                for name, rec in recorded:
                    headers = {k: v.decode("utf-8", "replace") for k, v in rec.headers or () if isinstance(v, bytes)}
                    self._recorder.delivery(f"kafka:{name}", headers, rec.value or b"", key=rec.key)
        for record, rejected in dead:
            await self._dead_letter(producer, record, rejected)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        await consumer.commit(offsets)
        self.committed += sum(len(r) for r in batch.values())
        for tp, next_offset in offsets.items():
            end = consumer.highwater(tp)
            if end is not None:
                self._metrics.kafka_lag.labels(tp.topic, str(tp.partition)).set(max(0, end - next_offset))

    def _sorted(
        self, batch: Batch, parsed: list[list[Parsed]]
    ) -> tuple[
        list[tuple[DeliveryRecord, Sequence[Event]]],
        list[tuple[str, ConsumerRecord[bytes, bytes]]],
        list[tuple[ConsumerRecord[bytes, bytes], Rejected]],
    ]:
        """The deliveries to journal (with their events), the messages to record for replay (when
        recording), and the records to dead-letter. A message without a problem, tracing off (a SIEM
        burst), costs a delivery record and nothing more."""
        items: list[tuple[DeliveryRecord, Sequence[Event]]] = []
        recorded: list[tuple[str, ConsumerRecord[bytes, bytes]]] = []
        dead: list[tuple[ConsumerRecord[bytes, bytes], Rejected]] = []
        now = datetime.now(UTC).isoformat()
        for (tp, records), results in zip(batch.items(), parsed, strict=True):
            fmt = self.config.topics[tp.topic]
            source = f"kafka:{tp.topic}"
            prefix = f"{source}:{tp.partition}:"
            for record, result in zip(records, results, strict=True):
                carrier = _NO_TRACE
                if result.rejected or self._traced:
                    with self._span(tp, record, fmt) as span:
                        dead += [(record, rejected) for rejected in result.rejected]
                        if result.rejected:
                            span.set_attribute("responder.dead_letter", result.rejected[0].reason)
                        if result.whole_message_refused:
                            continue
                        if self._traced:
                            carrier = carrier_of_current()
                items.append((DeliveryRecord(f"{prefix}{record.offset}", source, now, carrier), result.events))
                if self._recorder is not None:
                    recorded.append((fmt.name, record))
        return items, recorded, dead

    async def _stored(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]:
        """Hand the batch off, trying again while the journal cannot store (its disk is full): the
        offsets are committed only after, so nothing is skipped. The journal logs why, once a minute."""
        pause = 0.5
        while True:
            try:
                return await self._handoff.accept_batch(items)
            except JournalUnavailable:
                self._metrics.deliveries.labels(items[0][0].source, "journal_unavailable").inc(len(items))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)

    async def _parse_part(self, topic: str, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Parsed]:
        values = [r.value for r in records]
        received = [_received(r) for r in records]
        if self._parsers is not None:
            return await self._parsers.parse(topic, values, received)
        fmt = self.config.topics[topic]
        out: list[Parsed] = []
        for start in range(0, len(values), PARSE_TURN):
            if start:
                # The loop's turn: the journal's answers reach the pipeline (and a webhook its handler)
                # now, not after the whole slice; parsing a slice in one go left the journal idle.
                await asyncio.sleep(0)
            out += parse_all(values[start : start + PARSE_TURN], fmt, received[start : start + PARSE_TURN])
        return out

    def _span(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], fmt: Format
    ) -> AbstractContextManager[Span]:
        """A consumer span per message, continuing the producer's trace; nothing at all when tracing is
        off (a span that records nothing still costs as much as parsing a small alert)."""
        if not self._traced:
            return nullcontext(INVALID_SPAN)
        return self._tracer.start_as_current_span(
            f"consume {tp.topic}", context=context_from(_headers(record)), kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": tp.topic,
                        "messaging.kafka.offset": record.offset, "responder.format": fmt.name},
        )  # fmt: skip

    async def _dead_letter(
        self, producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], rejected: Rejected
    ) -> None:
        """The message (or one record of it, `x-responder-record` saying which) to the dead-letter topic."""
        self._metrics.dead_letters.labels(record.topic).inc()
        self._metrics.deliveries.labels(f"kafka:{record.topic}", "dead_letter").inc()
        headers = [
            ("x-responder-error", rejected.reason[:1000].encode()),
            ("x-responder-topic", record.topic.encode()),
            ("x-responder-partition", str(record.partition).encode()),
            ("x-responder-offset", str(record.offset).encode()),
            *([("x-responder-record", str(rejected.record).encode())] if rejected.record is not None else []),
            *[(k, v) for k, v in (record.headers or ()) if k.lower() in TRACE_HEADERS],
        ]
        await producer.send_and_wait(self.config.dead_letter_topic, rejected.value, key=record.key, headers=headers)


async def tls_refusal(bootstrap_servers: str, context: ssl.SSLContext, said: str) -> str | None:
    """Why a TLS handshake with the first bootstrap server fails, or None when it succeeds: what to change
    where aiokafka says only "Unable to bootstrap"."""
    host, _, port = bootstrap_servers.split(",", maxsplit=1)[0].strip().rpartition(":")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(host, int(port), ssl=context, server_hostname=host)
            writer.close()
            await writer.wait_closed()
    except ssl.SSLCertVerificationError as refused:
        return (
            f"TLS: the broker's certificate is refused ({refused.verify_message}): "
            f"check kafka.ssl_cafile and that the certificate names {host}"
        )
    except ssl.SSLError as failed:
        return f"TLS handshake failed ({failed.reason}): {said}"
    except (OSError, TimeoutError, ValueError) as unreachable:
        return f"cannot connect ({unreachable or type(unreachable).__name__}): {said}"
    return None


async def sasl_refusal(bootstrap_servers: str, options: Mapping[str, Any]) -> str | None:
    """Why the first bootstrap server refuses the SASL login, in the broker's own words (KIP-152: a broker
    says so before it closes), where aiokafka says only "Unable to bootstrap"; None when the login succeeds
    or the broker cannot be asked."""
    host, _, port = bootstrap_servers.split(",", maxsplit=1)[0].strip().rpartition(":")
    keys = ("security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
    mechanism = options.get("sasl_mechanism")
    try:
        async with asyncio.timeout(5):
            connection = await create_conn(
                host.strip("[]"), int(port), request_timeout_ms=5000, **{k: options[k] for k in keys if k in options}
            )
            connection.close()
    except SaslAuthenticationFailed as refused:
        return (
            f"the broker refused the {mechanism} login ({_broker_said(refused)}): "
            "check kafka.sasl_username and kafka_password"
        )
    except UnsupportedSaslMechanismError as unsupported:
        return f"{_broker_said(unsupported)}: check kafka.sasl_mechanism"
    # The rest (unreachable, a SCRAM proof refused without a SaslAuthenticate error) is said by the caller.
    except (KafkaError, OSError, TimeoutError, ValueError, KeyError):
        return None
    return None


def _broker_said(error: KafkaError) -> str:
    """The broker's message with an error, else the error's description (aiokafka passes either)."""
    said = error.args[0] if error.args else None
    return said if isinstance(said, str) and said else str(getattr(error, "description", type(error).__name__))
