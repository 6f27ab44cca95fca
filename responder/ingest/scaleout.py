"""Scale-out on Kafka: every source publishes its canonical events to one ingest topic, keyed by subject,
so that all events of one subject land on one partition and so on one instance of a consumer group; each
instance journals the events of its partitions (PostgreSQL, shared) and decides on them alone.

On a rebalance an instance rebuilds its engine from the shared journal (it may now own subjects another
instance scored) and takes over the pending events of the subjects its new partitions carry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from responder.core.events import Event
from responder.ingest.errors import PayloadError
from responder.ingest.handoff import partition_key
from responder.journal import Accepted, DeliveryRecord

TRACE_HEADERS = ("traceparent", "tracestate")


class KafkaHandoff:
    """Hands events off to the ingest topic: durable once the broker acknowledges (acks=all)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def accept(self, delivery: DeliveryRecord, events: Sequence[Event]) -> Accepted:
        (accepted,) = await self.accept_batch([(delivery, events)])
        return accepted

    async def accept_batch(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]:
        sent = []
        for delivery, events in items:
            headers = [(k, v.encode()) for k, v in delivery.trace.items() if k in TRACE_HEADERS]
            headers.append(("x-responder-delivery", delivery.id.encode()))
            for event in events:
                sent.append(
                    await self._producer.send(
                        self._topic, event.canonical_json.encode(), key=partition_key(event).encode(),
                        headers=headers,
                    )
                )  # fmt: skip
        for future in sent:
            await future
        # De-duplication happens where the events are journaled, on the consuming instance.
        return [Accepted(tuple(0 for _ in events)) for _, events in items]


class CanonicalFormat:
    """Messages of the ingest topic: canonical events, as KafkaHandoff wrote them."""

    name = "canonical"

    def records(self, message: Any) -> list[Any]:
        return [message]

    def events(self, message: Any, raw: bytes, received: datetime | None = None) -> list[Event]:
        del raw, received
        try:
            return [Event.model_validate(message)]
        except ValueError as exc:
            raise PayloadError(f"not a canonical event: {str(exc).splitlines()[0]}") from None


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2), as the producer does."""
    ids = list(range(partitions))
    return int(DefaultPartitioner()(key.encode(), ids, ids))


class Rebalanced(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, on_assigned: Callable[[set[TopicPartition]], Awaitable[None]]) -> None:
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._on_assigned(set(assigned))
