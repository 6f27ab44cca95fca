"""The session's Kafka-protocol broker is real: a message goes through produce, a consumer group and
committed offsets, as it will for SIEM alerts."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def test_a_message_goes_round_trip_through_a_consumer_group(kafka_bootstrap: str) -> None:
    topic, group = f"alerts-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        sent = {f"user-{n}".encode(): f'{{"n": {n}}}'.encode() for n in range(10)}
        for key, value in sent.items():
            await producer.send_and_wait(topic, value, key=key, headers=[("traceparent", b"00-x")])
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    received: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(20):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        assert dict(record.headers)["traceparent"] == b"00-x"
                        received[record.key] = record.value
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
    finally:
        await consumer.stop()
    assert received == sent
    assert sum(c or 0 for c in committed) == len(sent)
