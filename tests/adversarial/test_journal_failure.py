"""The journal's disk fills up, or is read-only: the service says so and waits, never crashes, and
loses nothing it acknowledged. On a real small tmpfs."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from responder.config import Kafka, KafkaTopic
from responder.journal import Journal, open_journal
from tests.support.payloads import payload
from tests.support.service import event_keys, no_hubs, running, settings

ROOT = Path(__file__).resolve().parents[2]
OKTA_SECRET = "okta-journal-failure-secret"
ADMIN_TOKEN = "admin-journal-failure-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextlib.contextmanager
def small_disk(directory: Path, size: str = "4m") -> Iterator[Path]:
    if os.geteuid() != 0:  # as the lab: a missing privilege fails, it never skips the proof
        pytest.fail("the full-disk tests mount a tmpfs: run `make test` as root")
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(disk: Path) -> Path:
    """Write until the filesystem has no byte left."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 1):  # then the last partial block
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def okta_delivery() -> tuple[dict[str, Any], list[str]]:
    """The Okta batch with fresh event ids: a new delivery each time."""
    body = copy.deepcopy(payload("okta/batch.json"))
    ids = []
    for event in body["data"]["events"]:
        event["uuid"] = str(uuid.uuid4())
        ids.append(event["uuid"])
    return body, ids


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_a_full_disk_gets_503_and_readiness_false_and_the_service_recovers_losing_nothing(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with small_disk(tmp_path / "disk") as disk:
        path = disk / "journal.db"
        s = settings(
            journal=f"sqlite:///{path}", okta_secret=OKTA_SECRET, admin_token=ADMIN_TOKEN,
            inventory=no_hubs(tmp_path),
        )  # fmt: skip
        headers = {"Authorization": OKTA_SECRET}
        acknowledged: list[str] = []
        async with running(s) as (_, base):
            body, ids = okta_delivery()
            async with http.post(f"{base}/hooks/okta", json=body, headers=headers) as r:
                assert r.status == 200
                acknowledged += ids
            filler = fill(disk)

            refused = None
            for _ in range(300):  # what the WAL still had room for is taken; then every delivery is refused
                body, ids = okta_delivery()
                async with http.post(f"{base}/hooks/okta", json=body, headers=headers) as r:
                    if r.status == 200:
                        acknowledged += ids
                        continue
                    refused = (r.status, r.headers.get("Retry-After"), await r.json())
                    break
            assert refused is not None, "the full disk never refused a delivery"
            status, retry_after, answer = refused
            assert status == 503
            assert retry_after is not None
            assert "retry" in answer["error"]
            for _ in range(5):  # more deliveries, all refused, said once in the log
                async with http.post(f"{base}/hooks/okta", json=okta_delivery()[0], headers=headers) as r:
                    assert r.status == 503
            async with http.get(f"{base}/readyz", headers=ADMIN) as r:
                assert r.status == 503
                assert (await r.json())["checks"]["journal"] is False
            said = [rec for rec in caplog.records if rec.levelno >= logging.ERROR and str(path) in rec.getMessage()]
            assert len(said) == 1, [rec.getMessage() for rec in said]
            assert "full" in said[0].getMessage()
            assert not [rec for rec in caplog.records if rec.exc_info and "journal" in rec.name]

            await asyncio.sleep(1.5)  # the pipeline meets the full disk too, and waits
            filler.unlink()  # room again: nobody restarts anything
            for _ in range(100):
                async with http.get(f"{base}/readyz", headers=ADMIN) as r:
                    if (await r.json())["checks"]["journal"]:
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("readiness did not come back when the disk had room again")
            body, ids = okta_delivery()
            async with http.post(f"{base}/hooks/okta", json=body, headers=headers) as r:
                assert r.status == 200
                acknowledged += ids

            journal = await open_journal(s.journal)
            try:
                for _ in range(200):
                    counts = await journal.counts()
                    if counts.get("events.processed", 0) >= len(acknowledged) and not counts.get("events.pending"):
                        break
                    await asyncio.sleep(0.05)
                keys = await event_keys(journal)
                counts = await journal.counts()
            finally:
                await journal.close()
            async with http.get(f"{base}/healthz") as r:  # the service never stopped
                assert r.status == 200
        assert all(any(i in k for k in keys) for i in acknowledged), "an acknowledged event is missing"
        assert counts.get("events.pending", 0) == 0
        assert counts["events.processed"] == len(keys)


def test_a_read_only_journal_at_start_is_one_line_naming_it_and_exit_2(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        path = disk / "journal.db"
        path.touch()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
        done = subprocess.run(
            [sys.executable, "-m", "responder", "run", "--listen", "127.0.0.1:0", "--journal", f"sqlite:///{path}",
             "--inventory", str(no_hubs(tmp_path))],
            env=clean, cwd=ROOT, capture_output=True, text=True, timeout=15, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0]
    assert "read-only" in lines[0].lower()


@pytest.mark.kafka
async def test_kafka_alerts_wait_for_a_full_journal_and_none_is_lost(
    tmp_path: Path, kafka_bootstrap: str, http: aiohttp.ClientSession
) -> None:
    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()

    async def send(numbers: range) -> set[str]:
        for n in numbers:
            alert = copy.deepcopy(payload("siem/wazuh.json"))
            alert["id"] = f"{topic}.{n}"
            await producer.send_and_wait(topic, json.dumps(alert).encode())
        return {f"siem:wazuh:{topic}.{n}" for n in numbers}

    async def stored(journal: Journal, wanted: set[str], timeout: float) -> set[str]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not wanted <= set(await event_keys(journal)):
                    await asyncio.sleep(0.1)
        return set(await event_keys(journal))

    try:
        with small_disk(tmp_path / "disk") as disk:
            s = settings(
                journal=f"sqlite:///{disk}/journal.db", inventory=no_hubs(tmp_path), connectors=ROOT / "connectors",
                kafka=Kafka(bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}",
                            topics=(KafkaTopic(name=topic, format="wazuh"),)),
            )  # fmt: skip
            async with running(s) as (_, base):
                journal = await open_journal(s.journal)
                try:
                    first = await send(range(5))
                    assert first <= await stored(journal, first, 20)
                    filler = fill(disk)
                    later = await send(range(5, 205))
                    await asyncio.sleep(3)  # the consumer meets the full disk, waits, tries again
                    async with http.get(f"{base}/healthz") as r:
                        assert r.status == 200
                    filler.unlink()
                    keys = await stored(journal, first | later, 30)
                finally:
                    await journal.close()
                async with http.get(f"{base}/healthz") as r:  # the service never stopped
                    assert r.status == 200
    finally:
        await producer.stop()
    assert first | later <= keys, f"{len((first | later) - keys)} alerts lost"
