"""One stored event must not stop every restart: intake refuses what the journal could not read back
(one depth limit, the reader's), and a start that meets an unreadable stored event quarantines it and
goes on. Against the real service over HTTP, a real Kafka-protocol broker, real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import ValidationError
from pydantic_core import from_json

from responder.config import Kafka, KafkaTopic, Settings, Ssf
from responder.core.events import MAX_DEPTH, Event, Source, Subjects
from responder.journal import DeliveryRecord, EventOutcome, EventRecord, Journal, open_journal
from tests.support.payloads import Transmitter, payload
from tests.support.service import event_keys, no_hubs, running

OKTA_SECRET = "Basic b2t0YTpzZWNyZXQtdmFsdWU="
OKTA_HEADERS = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
ALICE = "user:alice@example.com"


def _nested(levels: int) -> Any:
    """`levels` objects, one inside the other."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def _report(uuid_: str, user: str = "alice@example.com", **extra: Any) -> dict[str, Any]:
    """An Okta end-user report of suspicious activity, as published now."""
    party = {"id": "00u1", "type": "User", "alternateId": user}
    return {
        "uuid": uuid_, "published": datetime.now(UTC).isoformat(), "severity": "WARN",
        "eventType": "user.account.report_suspicious_activity_by_enduser", "actor": party, "target": [party],
        **extra,
    }  # fmt: skip


def _delivery(*events: dict[str, Any]) -> bytes:
    return json.dumps({"eventId": uuid.uuid4().hex, "data": {"events": list(events)}}).encode()


def _settings(tmp_path: Path, journal: str | None = None, **values: Any) -> Settings:
    return Settings(
        journal=journal or f"sqlite:///{tmp_path}/journal.db", okta_secret=OKTA_SECRET,
        admin_token="admin-token-for-tests", inventory=no_hubs(tmp_path), **values,
    )  # fmt: skip


async def _until(check: Any, what: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)
    assert await check(), what


def test_the_depth_limit_is_what_the_journal_reader_accepts() -> None:
    assert from_json(json.dumps(_nested(MAX_DEPTH)))
    with pytest.raises(ValueError, match="recursion limit"):
        from_json(json.dumps(_nested(MAX_DEPTH + 1)))

    # The event's own object is one level: its attributes get the rest, and read back.
    def event(attributes: Any) -> Event:
        return Event(
            id="e1", source=Source.SIEM, type="t", time=datetime.now(UTC), attributes=attributes, dedup_key="k"
        )

    deepest = event({"x": _nested(MAX_DEPTH - 2)})
    assert Event.model_validate_json(deepest.canonical_json) == deepest
    for levels in (MAX_DEPTH - 1, 300, 900):
        with pytest.raises(ValidationError, match=f"nest deeper than {MAX_DEPTH - 1} levels"):
            event({"x": _nested(levels)})


async def test_a_deep_okta_delivery_is_refused_and_every_restart_succeeds(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    normal = _report("c1d2e3f4-0000-11f1-9c3d-000000000001")
    async with running(settings) as (_, base), aiohttp.ClientSession() as http:
        for levels in (MAX_DEPTH - 1, 300, 900):  # the event just too deep to read back (~200), and deeper
            deep = _report(f"c1d2e3f4-0000-11f1-9c3d-{levels:012d}", debugContext=_nested(levels))
            async with http.post(f"{base}/hooks/okta", data=_delivery(deep), headers=OKTA_HEADERS) as r:
                assert r.status == 400, await r.text()
                assert r.content_type == "application/json"
                assert f"nests deeper than {MAX_DEPTH} levels" in (await r.json())["error"]
        async with http.post(f"{base}/hooks/okta", data=_delivery(normal), headers=OKTA_HEADERS) as r:
            assert r.status == 200
    # Started again (twice), the service rebuilds its engine from the journal and serves.
    for _ in range(2):
        async with (
            running(settings) as (_, base),
            aiohttp.ClientSession() as http,
            http.get(f"{base}/api/subjects/{ALICE}", headers=ADMIN) as r,
        ):
            assert (await r.json())["score"] == 80


@pytest.mark.kafka
@pytest.mark.timeout(180)
@pytest.mark.parametrize("parse_workers", [0, 1])
async def test_a_siem_alert_too_deep_to_read_back_is_dead_lettered_not_stored(
    kafka_bootstrap: str, tmp_path: Path, parse_workers: int
) -> None:
    run = uuid.uuid4().hex[:6]
    topic, dead_topic = f"wazuh-{run}", f"dead-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1), NewTopic(dead_topic, 1, 1)])
    finally:
        await admin.close()
    deep = copy.deepcopy(payload("siem/wazuh.json"))
    deep["id"], deep["deep"] = "deep-1", _nested(MAX_DEPTH - 1)  # the alert MAX_DEPTH deep: its event one more
    assert from_json(json.dumps(deep)), "the reader takes the message itself"
    normal = copy.deepcopy(payload("siem/wazuh.json"))
    normal["id"] = "normal-1"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for alert in (deep, normal):
            await producer.send_and_wait(topic, json.dumps(alert).encode())
    finally:
        await producer.stop()

    kafka = Kafka(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{run}", topics=(KafkaTopic(name=topic, format="wazuh"),),
        dead_letter_topic=dead_topic, parse_workers=parse_workers,
    )  # fmt: skip
    settings = _settings(tmp_path, kafka=kafka)
    journal = await open_journal(settings.journal)
    try:
        async with running(settings):

            async def processed() -> bool:
                return (await journal.counts()).get("events.processed", 0) >= 1

            await _until(processed, "the normal alert was journaled and decided")
        assert await event_keys(journal) == ["siem:wazuh:normal-1"]
    finally:
        await journal.close()
    dead = AIOKafkaConsumer(dead_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await dead.start()
    try:
        records = [r for rs in (await dead.getmany(timeout_ms=10_000)).values() for r in rs]
    finally:
        await dead.stop()
    assert [json.loads(r.value)["id"] for r in records] == ["deep-1"]
    assert f"nest deeper than {MAX_DEPTH - 1} levels" in dict(records[0].headers)["x-responder-error"].decode()
    async with running(settings.model_copy(update={"kafka": None})):
        pass  # and it starts again


def _event_json(uuid_: str, attributes: Any) -> str:
    """The canonical JSON of an alice report, by hand: as a journal written before the limit held it."""
    return json.dumps({
        "id": uuid_, "source": "okta", "product": "okta", "type": "user.account.report_suspicious_activity_by_enduser",
        "time": datetime.now(UTC).isoformat(), "subjects": Subjects(users=("alice@example.com",)).model_dump(),
        "severity": 2, "attributes": attributes, "dedup_key": f"okta:{uuid_}",
    })  # fmt: skip


async def _journal_with_an_unreadable_event(url: str) -> None:
    journal = await open_journal(url)
    try:
        now = datetime.now(UTC).isoformat()
        delivery = DeliveryRecord("okta:old", "okta", now)
        bad = EventRecord("okta:bad", ALICE, now, _event_json("bad", {"x": _nested(MAX_DEPTH)}))
        good = EventRecord("okta:good", ALICE, now, _event_json("good", {}))
        (accepted,) = await journal.accept_batch([(delivery, [bad, good])], "test")
        await journal.record_outcomes([EventOutcome(s) for s in accepted.seqs if s is not None], now)
    finally:
        await journal.close()


async def test_an_unreadable_stored_event_is_quarantined_and_the_start_goes_on(
    journal_url: str, tmp_path: Path
) -> None:
    await _journal_with_an_unreadable_event(journal_url)
    settings = _settings(tmp_path, journal=journal_url)
    for start in (1, 2):
        async with running(settings) as (_, base), aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/subjects/{ALICE}", headers=ADMIN) as r:
                assert (await r.json())["score"] == 80, "the readable event was replayed"
            async with http.get(f"{base}/metrics", headers=ADMIN) as r:
                # Counted once: set aside the first time, a later start does not meet it again.
                assert f"responder_quarantined_events_total {1.0 if start == 1 else 0.0}" in await r.text()
    journal: Journal = await open_journal(journal_url)
    try:
        counts = await journal.counts()
        assert counts["events.quarantined"] == 1 and counts["events.processed"] == 1
        async with journal.transaction() as tx:
            (kept,) = await tx.fetch("SELECT seq, body FROM events WHERE status = 'quarantined'")
        assert json.loads(kept["body"])["id"] == "bad", "kept, with its body, for inspection"
        (entry,) = await journal.audit_trail(f"event:{kept['seq']}")
        assert entry.kind == "event.quarantined" and "recursion limit" in json.loads(entry.detail)["reason"]
    finally:
        await journal.close()


async def test_a_deep_signed_set_is_refused_with_an_rfc_8935_error(tmp_path: Path) -> None:
    transmitter = Transmitter()
    (tmp_path / "jwks.json").write_text(json.dumps(transmitter.jwks()))
    ssf = Ssf(
        issuer="https://idp.partner.example",
        audience="https://soar.acme.example/ssf/push",
        jwks_file=tmp_path / "jwks.json",
    )
    settings = _settings(tmp_path, ssf=ssf)
    async with running(settings) as (_, base), aiohttp.ClientSession() as http:
        for levels in (MAX_DEPTH, 300):
            claims = payload("ssf/credential_compromise.json")
            claims["jti"] = f"deep-{levels}"
            claims["events"]["https://schemas.openid.net/secevent/risc/event-type/credential-compromise"]["x"] = (
                _nested(levels)
            )
            headers = {"Content-Type": "application/secevent+jwt"}
            async with http.post(f"{base}/hooks/ssf", data=transmitter.sign(claims), headers=headers) as r:
                assert r.status == 400
                answer = await r.json()
                assert answer["err"] == "invalid_request" and "nest deeper" in answer["description"]
    async with running(settings):
        pass  # and it starts again
