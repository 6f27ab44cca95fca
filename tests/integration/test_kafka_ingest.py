"""SIEM alerts through a real Kafka-protocol broker into the real service process: 10,000 alerts in the
four formats, the consumer killed halfway (SIGKILL, no goodbye) and started again. Every alert arrives at
least once, none is lost, no offset is committed before its alert is in the journal, and the invalid
messages are on the dead-letter topic with the reason."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support.payloads import payload
from tests.support.service import no_hubs

RESPONDER = str(Path(sys.executable).with_name("responder"))
PER_FORMAT = 2500
PARTITIONS = 3


def _wazuh(n: int) -> dict[str, Any]:
    a = copy.deepcopy(payload("siem/wazuh.json"))
    a["id"] = f"1772446904.{n}"
    return a


def _elastic(n: int) -> dict[str, Any]:
    a = copy.deepcopy(payload("siem/elastic.json"))
    a["kibana.alert.uuid"] = f"elastic-{n}"
    return a


def _ocsf(n: int) -> dict[str, Any]:
    a = copy.deepcopy(payload("siem/ocsf.json"))
    a["finding_info"]["uid"] = f"ocsf-{n}"
    return a


def _splunk(n: int) -> dict[str, Any]:
    a = copy.deepcopy(payload("siem/splunk.json"))
    a["result"]["event_id"] = f"splunk-{n}"
    return a


FORMATS: dict[str, tuple[Callable[[int], dict[str, Any]], Callable[[int], str]]] = {
    "wazuh": (_wazuh, lambda n: f"siem:wazuh:1772446904.{n}"),
    "elastic": (_elastic, lambda n: f"siem:elastic:elastic-{n}"),
    "ocsf": (_ocsf, lambda n: f"siem:ocsf:ocsf-{n}"),
    "splunk": (_splunk, lambda n: f"siem:splunk:splunk-{n}"),
}
INVALID = [b"{not json", b"[]", b'{"rule": {"level": 3}}', json.dumps({"class_uid": 1}).encode(), b"\xff\xfe"]


def _journal_keys(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        # The file exists from the service's first connect; its tables a moment later.
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone():
            return set()
        return {row[0] for row in conn.execute("SELECT dedup_key FROM events")}


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


async def _start(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            RESPONDER, "run", "--config", str(config), stdout=out, stderr=out, env={**os.environ}
        )


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
    assert predicate(), what


async def _produce(bootstrap: str, topics: dict[str, str]) -> dict[tuple[str, int, int], str | None]:
    """2,500 valid alerts per format with a few unusable messages mixed in: where each landed, and the
    dedup key it must get (None: it belongs on the dead-letter topic)."""
    expected: dict[tuple[str, int, int], str | None] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        pending = []
        for fmt, (make, key_of) in FORMATS.items():
            for n in range(PER_FORMAT):
                value = json.dumps(make(n)).encode()
                pending.append((await producer.send(topics[fmt], value, key=str(n).encode()), key_of(n)))
                if n % 500 == 250:
                    bad = INVALID[n // 500 % len(INVALID)]
                    pending.append((await producer.send(topics[fmt], bad, key=b"bad"), None))
        for future, key in pending:
            meta = await future
            expected[(meta.topic, meta.partition, meta.offset)] = key
    finally:
        await producer.stop()
    return expected


@pytest.mark.timeout(240)
async def test_ten_thousand_alerts_survive_a_killed_consumer(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    topics = {fmt: f"{fmt}-{run}" for fmt in FORMATS}
    dead_topic = f"dead-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics.values()] + [NewTopic(dead_topic, 1, 1)])
    finally:
        await admin.close()

    expected = await _produce(kafka_bootstrap, topics)
    valid = {k for k in expected.values() if k is not None}
    assert len(valid) == 4 * PER_FORMAT

    db = tmp_path / "journal.db"
    config = tmp_path / "responder.yaml"
    group = f"responder-{run}"

    def configure(parse_workers: int) -> None:
        settings = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "journal": f"sqlite:///{db}",
            "inventory": str(no_hubs(tmp_path)),
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": group,
                "topics": [{"name": t, "format": f} for f, t in topics.items()],
                "dead_letter_topic": dead_topic,
                "max_in_flight": 500,
                "parse_workers": parse_workers,
            },
        }
        config.write_text(yaml.safe_dump(settings))

    log = tmp_path / "service.log"

    # The killed run parses in worker processes, the restarted one in the event loop: both paths, and
    # a worker must not outlive a service killed outright.
    configure(parse_workers=2)
    first = await _start(config, log)
    try:
        await _until(lambda: len(_journal_keys(db)) >= 3000, 90, "the first consumer made progress")
        workers = _children(first.pid)
        assert len(workers) >= 2, "the parser processes run"  # and multiprocessing's resource tracker
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    await _until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 10, "no worker outlives it")
    configure(parse_workers=0)

    # Nothing below a committed offset may be missing from the journal.
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        committed = {
            (t, p): await probe.committed(TopicPartition(t, p)) or 0 for t in topics.values() for p in range(PARTITIONS)
        }
    finally:
        await probe.stop()
    in_journal = _journal_keys(db)
    assert 0 < len(in_journal) < len(valid), "the kill happened halfway"
    covered = [key for (t, p, offset), key in expected.items() if offset < committed[(t, p)] and key is not None]
    assert covered, "some offsets were committed before the kill"
    assert set(covered) <= in_journal

    second = await _start(config, log)
    try:
        await _until(lambda: _journal_keys(db) >= valid, 120, "every alert arrived after the restart")
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0, log.read_text()[-3000:]
    assert _journal_keys(db) == valid  # at least once, and de-duplicated: exactly the valid alerts

    dead = AIOKafkaConsumer(dead_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await dead.start()
    should_be_dead = {where for where, key in expected.items() if key is None}
    reasons: dict[tuple[str, int, int], str] = {}
    try:
        async with asyncio.timeout(30):
            while not should_be_dead <= set(reasons):
                for records in (await dead.getmany(timeout_ms=500)).values():
                    for r in records:
                        h = {k: v.decode() for k, v in r.headers}
                        where = (h["x-responder-topic"], int(h["x-responder-partition"]), int(h["x-responder-offset"]))
                        assert expected[where] is None, f"a valid alert was dead-lettered: {h}"
                        reasons[where] = h["x-responder-error"]
    finally:
        await dead.stop()
    assert set(reasons) == should_be_dead  # redelivery after the kill may repeat one, never add another
    by_reason = set(reasons.values())
    assert "not valid JSON" in by_reason
    assert any("class_uid" in r for r in by_reason)  # the OCSF topic refuses a non-finding
