"""Messages that carry several records, through a real Kafka-protocol broker into the real service: an
Event Hubs message (`{"records": [...]}`) or an array of Wazuh alerts with one unusable record loses that
record alone. It goes to the dead-letter topic on its own, with the reason and its place in the message;
every other record of the message is journaled, and the offsets are committed."""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.test_kafka_ingest import _journal_keys, _start, _until
from tests.support.service import no_hubs

REAL = Path(__file__).resolve().parents[1] / "payloads" / "real"
MESSAGES = 60


def _entra_message(n: int) -> tuple[dict[str, Any], set[str], tuple[int, Any]]:
    """Two real RiskyUsers records (made distinct) and, at a place that moves with n, one without a time."""
    real = json.loads((REAL / "entra" / "eventhubs-riskyusers.json").read_bytes())["records"]
    good = copy.deepcopy(real)
    for i, record in enumerate(good):
        record["properties"]["id"] = f"{n}-{i}"
    broken = copy.deepcopy(real[1])
    broken["properties"] |= {"id": f"{n}-broken", "riskLastUpdatedDateTime": "String (timestamp)"}
    broken["time"] = "soon"
    at = n % 3
    records: list[Any] = [*good]
    records.insert(at, broken)
    keys = {f"entra:riskyUser:{r['properties']['id']}:{r['properties']['riskLastUpdatedDateTime']}" for r in good}
    return {"records": records}, keys, (at, broken)


def _wazuh_message(n: int) -> tuple[list[Any], set[str], tuple[int, Any]]:
    """Three real Wazuh alerts (made distinct) in one array and, among them, a search hit that is no alert."""
    alert = json.loads((REAL / "wazuh" / "virustotal-malware-detected.json").read_bytes())
    hit = json.loads((REAL / "wazuh" / "indexer-hit-sshd-5702.json").read_bytes())
    good = [copy.deepcopy(alert) | {"id": f"{n}.{i}"} for i in range(3)]
    at = n % 4
    alerts: list[Any] = [*good]
    alerts.insert(at, hit)
    return alerts, {f"siem:wazuh:{n}.{i}" for i in range(3)}, (at, hit)


Where = tuple[str, int, int]  # topic, partition, offset


async def _produce(bootstrap: str, topics: dict[str, str]) -> tuple[set[str], dict[Where, tuple[int, Any]]]:
    """The messages, each with one broken record: the dedup keys the journal must get, and where each
    message landed with the broken record's place and value."""
    valid: set[str] = set()
    broken: dict[Where, tuple[int, Any]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for n in range(MESSAGES):
            for fmt, make in (("entra", _entra_message), ("wazuh", _wazuh_message)):
                body, keys, bad = make(n)
                meta = await producer.send_and_wait(topics[fmt], json.dumps(body).encode(), key=str(n).encode())
                valid |= keys
                broken[(meta.topic, meta.partition, meta.offset)] = bad
    finally:
        await producer.stop()
    return valid, broken


async def _until_committed(bootstrap: str, group: str, messages: set[tuple[str, int, int]]) -> None:
    """Offsets are committed once the batch is handed off and its rejects are out: wait for the last."""
    ends: dict[TopicPartition, int] = {}
    for t, p, offset in messages:
        ends[TopicPartition(t, p)] = max(ends.get(TopicPartition(t, p), 0), offset + 1)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        async with asyncio.timeout(30):
            for tp, end in ends.items():
                while (await probe.committed(tp) or 0) < end:
                    await asyncio.sleep(0.1)
    finally:
        await probe.stop()


async def _dead_letters(bootstrap: str, topic: str, count: int) -> dict[tuple[str, int, int], tuple[int, Any, str]]:
    """Each dead letter: where its message was, and the record's place, value and reason."""
    dead = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await dead.start()
    got: dict[tuple[str, int, int], tuple[int, Any, str]] = {}
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                for records in (await dead.getmany(timeout_ms=500)).values():
                    for r in records:
                        h = {k: v.decode() for k, v in r.headers}
                        where = (h["x-responder-topic"], int(h["x-responder-partition"]), int(h["x-responder-offset"]))
                        assert where not in got, f"a message dead-lettered twice: {h}"
                        got[where] = (int(h["x-responder-record"]), json.loads(r.value), h["x-responder-error"])
    finally:
        await dead.stop()
    return got


@pytest.mark.timeout(180)
@pytest.mark.parametrize("parse_workers", [0, 2])
async def test_one_unusable_record_costs_only_itself(kafka_bootstrap: str, tmp_path: Path, parse_workers: int) -> None:
    run = uuid.uuid4().hex[:6]
    topics = {"entra": f"entra-{run}", "wazuh": f"wazuh-{run}"}
    dead_topic = f"dead-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 2, 1) for t in topics.values()] + [NewTopic(dead_topic, 1, 1)])
    finally:
        await admin.close()
    valid, broken = await _produce(kafka_bootstrap, topics)

    db = tmp_path / "journal.db"
    config = tmp_path / "responder.yaml"
    group = f"responder-{run}"
    kafka = {
        "bootstrap_servers": kafka_bootstrap,
        "group_id": group,
        "topics": [{"name": t, "format": f} for f, t in topics.items()],
        "dead_letter_topic": dead_topic,
        "max_in_flight": 50,
        "parse_workers": parse_workers,
    }
    inventory = str(no_hubs(tmp_path))
    config.write_text(yaml.safe_dump({"listen": {"host": "127.0.0.1", "port": 0}, "journal": f"sqlite:///{db}",
                                      "inventory": inventory, "kafka": kafka}))  # fmt: skip
    log = tmp_path / "service.log"
    service = await _start(config, log)
    try:
        await _until(lambda: _journal_keys(db) >= valid, 90, "every usable record arrived")
        await _until_committed(kafka_bootstrap, group, set(broken))
    finally:
        service.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(service.wait(), 30) == 0, log.read_text()[-3000:]
    assert _journal_keys(db) == valid

    got = await _dead_letters(kafka_bootstrap, dead_topic, len(broken))
    assert set(got) == set(broken)
    for where, (at, record) in broken.items():
        place, value, reason = got[where]
        assert (place, value) == (at, record)
        assert ("String (timestamp)" in reason) if where[0] == topics["entra"] else ("rule.level is missing" in reason)
