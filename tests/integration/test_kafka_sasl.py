"""Kafka with a SASL login through the real service: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 over TLS, and
SCRAM without TLS, each followed by alerts consumed, committed and dead-lettered and by webhook events
through the scale-out ingest topic; a wrong password gives one line and Kafka not ready while the webhooks
serve.

The Tansu these tests use cannot hold SASL users (see test_kafka_tls.py), so the login is made with
tests/support/sasl_front.py, a SASL front written from the Kafka protocol and the SASL RFCs, between the
client and the real broker: client, TLS terminator, SASL front, Tansu. After the login every byte reaches
Tansu unchanged, so consuming, committing and producing are the real broker's.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from responder import preflight
from responder.lab.kafka import kafka_broker
from tests.support.payloads import payload
from tests.support.sasl_front import Login, SaslFront, sasl_front
from tests.support.service import event_keys, no_hubs, serving, settings
from tests.support.tls import TestCA, loopback_socket, tls_terminator

ADMIN = "kafka-sasl-admin-token-0123456789"
OKTA = "kafka-sasl-okta-secret-0123456789"
USER, PASSWORD = "responder", "kafka-sasl-password-0123456789"


@dataclass(frozen=True)
class Fronted:
    """The broker as clients reach it: `localhost:port`, through TLS when `ca` is set, then the front."""

    port: int
    ca: TestCA | None
    front: SaslFront

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    def client(self, mechanism: str, password: str = PASSWORD) -> dict[str, Any]:
        """The test's own clients: logged in through the same front, since the broker advertises only it."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap, "sasl_mechanism": mechanism,
            "sasl_plain_username": USER, "sasl_plain_password": password,
        }  # fmt: skip
        if self.ca is None:
            return options | {"security_protocol": "SASL_PLAINTEXT"}
        context = ssl.create_default_context(cafile=str(self.ca.cafile))
        return options | {"security_protocol": "SASL_SSL", "ssl_context": context}

    def service(self, mechanism: str) -> dict[str, Any]:
        """The service's `kafka` settings for this broker (its password comes from a file)."""
        kafka: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap, "sasl_mechanism": mechanism, "sasl_username": USER,
        }  # fmt: skip
        if self.ca is None:
            return kafka | {"security_protocol": "SASL_PLAINTEXT"}
        return kafka | {"security_protocol": "SASL_SSL", "ssl_cafile": str(self.ca.cafile)}


@asynccontextmanager
async def fronted(tmp_path: Path, *, tls: bool) -> AsyncIterator[Fronted]:
    """A fresh broker behind the SASL front (and a TLS terminator before it when `tls`), for the block."""
    async with AsyncExitStack() as stack:
        outer = loopback_socket()
        port = outer.getsockname()[1]
        plain = stack.enter_context(kafka_broker(advertised=f"localhost:{port}"))
        broker_port = int(plain.rpartition(":")[2])
        if not tls:
            front = await stack.enter_async_context(sasl_front(outer, broker_port, {USER: PASSWORD}))
            yield Fronted(port, None, front)
            return
        ca = TestCA(tmp_path, "kafka")
        inner = loopback_socket()
        front = await stack.enter_async_context(sasl_front(inner, broker_port, {USER: PASSWORD}))
        await stack.enter_async_context(tls_terminator(outer, inner.getsockname()[1], ca.issue("broker")))
        yield Fronted(port, ca, front)


def _alert(n: int) -> bytes:
    a = copy.deepcopy(payload("siem/wazuh.json"))
    a["id"] = f"1772446904.{n}"
    return json.dumps(a).encode()


def _okta_delivery(user: str) -> dict[str, Any]:
    event = {
        "uuid": str(uuid.uuid4()), "published": "2026-03-02T10:00:00.000Z",
        "eventType": "security.threat.detected", "severity": "WARN",
        "actor": {"type": "User", "alternateId": user}, "outcome": {"result": "DENY", "reason": "DENY"},
    }  # fmt: skip
    return {"eventId": str(uuid.uuid4()), "data": {"events": [event]}}


def _service(tmp_path: Path, kafka: dict[str, Any], password: str) -> Any:
    secret = tmp_path / "kafka-password"
    secret.write_text(f"{password}\n")
    secret.chmod(0o600)
    return settings(
        listen={"host": "127.0.0.1", "port": 0}, journal=f"sqlite:///{tmp_path}/journal.db",
        inventory=no_hubs(tmp_path), admin_token=ADMIN, okta_secret=OKTA, kafka=kafka,
        kafka_password_file=secret,
    )  # fmt: skip


async def _committed(client: dict[str, Any], group: str, topic: str) -> int | None:
    probe = AIOKafkaConsumer(**client, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        offset: int | None = await probe.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await probe.stop()


@pytest.mark.parametrize(
    ("tls", "mechanism"),
    [(True, "PLAIN"), (True, "SCRAM-SHA-256"), (True, "SCRAM-SHA-512"), (False, "SCRAM-SHA-256")],
    ids=["SASL_SSL-PLAIN", "SASL_SSL-SCRAM-SHA-256", "SASL_SSL-SCRAM-SHA-512", "SASL_PLAINTEXT-SCRAM-SHA-256"],
)
async def test_after_a_sasl_login_alerts_are_committed_and_dead_lettered_and_webhooks_go_through_ingest(
    tmp_path: Path, tls: bool, mechanism: str
) -> None:
    async with fronted(tmp_path, tls=tls) as broker:
        client = broker.client(mechanism)
        run = uuid.uuid4().hex[:6]
        topic, dead_topic, ingest, group = f"wazuh-{run}", f"dead-{run}", f"ingest-{run}", f"responder-{run}"
        admin = AIOKafkaAdminClient(**client)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(n, 1, 1) for n in (topic, dead_topic, ingest)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(**client, enable_idempotence=False)
        await producer.start()
        try:
            for n in range(5):
                await producer.send_and_wait(topic, _alert(n))
            await producer.send_and_wait(topic, b"{not json")
        finally:
            await producer.stop()

        kafka = broker.service(mechanism) | {
            "group_id": group, "topics": [{"name": topic, "format": "wazuh"}],
            "dead_letter_topic": dead_topic, "ingest_topic": ingest,
        }  # fmt: skip
        users = [f"user{n}@sasl.example" for n in range(3)]
        dead = AIOKafkaConsumer(dead_topic, **client, auto_offset_reset="earliest")
        await dead.start()
        try:
            async with serving(_service(tmp_path, kafka, PASSWORD)) as (base, journal), aiohttp.ClientSession() as http:
                for user in users:
                    async with http.post(
                        f"{base}/hooks/okta", json=_okta_delivery(user), headers={"Authorization": OKTA}
                    ) as r:
                        assert r.status == 200
                # Alerts and webhook events alike reach the journal only through the ingest topic.
                async with asyncio.timeout(30):
                    while len(await event_keys(journal)) < 5 + len(users):
                        await asyncio.sleep(0.2)
                alerts = {k for k in await event_keys(journal) if k.startswith("siem:")}
                assert alerts == {f"siem:wazuh:1772446904.{n}" for n in range(5)}
                async with http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                    assert (await r.json())["checks"]["kafka"] is True
                records = []
                async with asyncio.timeout(20):
                    while not records:
                        for batch in (await dead.getmany(timeout_ms=500)).values():
                            records += batch
                assert records[0].value == b"{not json"
                assert dict(records[0].headers)["x-responder-topic"] == topic.encode()
                async with asyncio.timeout(20):
                    # The five alerts and the bad one by the alert group; all eight events by the ingest group.
                    while await _committed(client, group, topic) != 6:
                        await asyncio.sleep(0.3)
                    while await _committed(client, f"{group}.ingest", ingest) != 5 + len(users):
                        await asyncio.sleep(0.3)
        finally:
            await dead.stop()
        assert broker.front.refused == []
        assert set(broker.front.logins) == {Login(USER, mechanism)}
        # Every connection logs in (the front lets nothing else through): the service's alert consumer, its
        # dead-letter producer, the ingest producer and consumer, and the test's own clients, several each.
        assert len(broker.front.logins) >= 8


async def test_a_wrong_password_gives_one_clear_line_and_kafka_not_ready_while_webhooks_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="responder.ingest.kafka")
    async with fronted(tmp_path, tls=True) as broker:
        kafka = broker.service("SCRAM-SHA-512") | {"topics": [{"name": "alerts", "format": "wazuh"}]}
        wrong = "not-the-kafka-password-0123"
        async with serving(_service(tmp_path, kafka, wrong)) as (base, _), aiohttp.ClientSession() as http:
            async with asyncio.timeout(20):
                while not [r for r in caplog.records if r.name == "responder.ingest.kafka"]:
                    await asyncio.sleep(0.1)
            challenge = {"X-Okta-Verification-Challenge": "c5a1d3e9f0", "Authorization": OKTA}
            async with http.get(f"{base}/hooks/okta", headers=challenge) as r:
                assert r.status == 200, "the webhooks serve while Kafka cannot be had"
            async with http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                assert r.status == 503
                assert (await r.json())["checks"]["kafka"] is False
        checked = await preflight.kafka(_service(tmp_path, kafka, wrong), timeout_s=5)
        assert broker.front.logins == []
        assert broker.front.refused[0].startswith("SCRAM-SHA-512: Authentication failed")
    lines = [r for r in caplog.records if r.name == "responder.ingest.kafka"]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
    assert not any(wrong in r.getMessage() for r in caplog.records)
    refused = (
        f"kafka {broker.bootstrap}: the broker refused the SCRAM-SHA-512 login (Authentication failed during "
        "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512): check "
        "kafka.sasl_username and kafka_password"
    )
    assert lines[0].getMessage().startswith(f"{refused}; trying again in "), lines[0].getMessage()
    # `responder config check` says the same.
    assert checked == [refused]


async def test_the_front_lets_no_request_through_before_a_login(tmp_path: Path) -> None:
    """The front is a real gate: a client that does not log in gets no further than ApiVersions."""
    async with fronted(tmp_path, tls=False) as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=3000)
        with pytest.raises(Exception, match="Unable to bootstrap"):
            await producer.start()
        await producer.stop()
        assert broker.front.logins == []
        assert broker.front.refused[0].startswith("api_key 3 ")  # Metadata, the first request after ApiVersions
