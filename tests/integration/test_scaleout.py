"""Scale-out: two instances, one PostgreSQL journal, one ingest topic keyed by subject. Webhook deliveries
arrive at either instance; every event of one subject is journaled and decided by the one instance that
owns its partition, each event exactly once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from responder.config import Kafka, Settings
from responder.journal import open_journal
from responder.service.service import Service
from tests.support.postgres import new_database
from tests.support.service import no_hubs, running

SECRET = "okta-scaleout-secret"
PARTITIONS = 4


def _delivery(user: str) -> dict[str, Any]:
    event = {
        "uuid": str(uuid.uuid4()), "published": "2026-03-02T10:00:00.000Z", "eventType": "security.threat.detected",
        "severity": "WARN", "actor": {"type": "User", "alternateId": user},
        "outcome": {"result": "DENY", "reason": "DENY"},
    }  # fmt: skip
    return {"eventId": str(uuid.uuid4()), "data": {"events": [event]}}


@pytest.mark.timeout(180)
async def test_each_subject_is_decided_by_one_instance(kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path) -> None:
    topic = f"ingest-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    url = await new_database(postgres_dsn, "scale")
    settings = Settings(
        journal=url, okta_secret=SECRET, inventory=no_hubs(tmp_path),
        kafka=Kafka(bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", ingest_topic=topic,
                    dead_letter_topic=f"{topic}-dead"),
    )  # fmt: skip
    async with running(settings, instance="a") as (a, base_a), running(settings, instance="b") as (b, base_b):
        services: list[Service] = [a, b]
        async with asyncio.timeout(60):
            while not (
                a.partitions_owned and b.partitions_owned
                and a.partitions_owned | b.partitions_owned == set(range(PARTITIONS))
                and not a.partitions_owned & b.partitions_owned
            ):  # fmt: skip
                await asyncio.sleep(0.2)
        users = [f"user{n}@scale.example" for n in range(12)]
        async with aiohttp.ClientSession() as http:
            for round_ in range(3):
                for n, user in enumerate(users):
                    base = (base_a, base_b)[(n + round_) % 2]  # each person's events reach both instances
                    async with http.post(
                        f"{base}/hooks/okta", json=_delivery(user), headers={"Authorization": SECRET}
                    ) as r:
                        assert r.status == 200
        journal = await open_journal(url)
        try:
            async with asyncio.timeout(60):
                while True:
                    counts = await journal.counts()
                    if counts.get("events.processed", 0) == 3 * len(users):
                        break
                    await asyncio.sleep(0.2)
            async with journal.transaction() as tx:
                rows = await tx.fetch("SELECT subject, owner FROM events")
        finally:
            await journal.close()
        assert "events.pending" not in counts
    owners: dict[str, set[str]] = {}
    for row in rows:
        owners.setdefault(row["subject"], set()).add(row["owner"])
    assert set(owners) == set(users)
    assert all(len(o) == 1 for o in owners.values()), owners  # one instance per subject
    assert {o for s in owners.values() for o in s} == {"a", "b"}  # and both instances took part
    assert all(s.started.is_set() for s in services)
