"""The whole service against the lab: a delivery in, a decision, the hub changed, packets to prove it,
and the decision's life after (undo, approval, expiry, drift repaired by the reconciler)."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from responder.config import Kafka, KafkaTopic, Settings
from responder.lab import Lab
from responder.pep import SshHub
from tests.support.payloads import payload
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
RULES = Path(__file__).resolve().parents[2] / "rules"
OKTA_SECRET, ADMIN = "okta-e2e-secret-value", "admin-e2e-token-value"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def _rules(tmp: Path, **responses: str) -> Path:
    """The repository's rules with some response lines rewritten (short TTLs, approval)."""
    target = tmp / "rules"
    shutil.copytree(RULES, target, ignore=shutil.ignore_patterns("tests"))
    text = (target / "responses.yaml").read_text()
    for old, new in responses.items():
        assert old in text, old
        text = text.replace(old, new)
    (target / "responses.yaml").write_text(text)
    return target


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
async def hub(lab: Lab) -> AsyncIterator[SshHub]:
    h = SshHub(lab.inventory.hub("hub1"))
    try:
        yield h
    finally:
        await h.close()


def _settings(lab: Lab, tmp: Path, rules: Path | None = None, **extra: Any) -> Settings:
    return Settings(
        journal=f"sqlite:///{tmp}/journal.db",
        inventory=lab.inventory_path,
        rules=(rules or RULES,),
        okta_secret=OKTA_SECRET,
        admin_token=ADMIN,
        reconcile_interval_s=0.5,
        **extra,
    )


def _okta(event_type: str, user: str) -> dict[str, Any]:
    body = copy.deepcopy(payload("okta/batch.json"))
    event = body["data"]["events"][0]
    event |= {"uuid": str(uuid.uuid4()), "eventType": event_type}
    event["actor"]["alternateId"] = event["target"][0]["alternateId"] = user
    body["eventId"] = str(uuid.uuid4())
    body["data"]["events"] = [event]
    return body


async def _peer_present(hub: SshHub, key: str) -> bool:
    return key in {p["key"] for p in (await hub.call("peers", {"interface": "wg0"}))["peers"]}


async def _decisions(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/decisions", headers=ADMIN_HEADERS) as r:
        assert r.status == 200
        return list((await r.json())["decisions"])


async def _operate(http: aiohttp.ClientSession, base: str, decision: str, verb: str) -> None:
    async with http.post(f"{base}/api/decisions/{decision}/{verb}", headers=ADMIN_HEADERS, json={"actor": "e2e"}) as r:
        assert r.status == 202, await r.text()


async def test_okta_report_cuts_admin1_off_within_a_second_then_undo_restores(
    lab: Lab, hub: SshHub, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    admin1 = next(p for p in lab.inventory.peers if p.name == "admin1")
    assert await tcp(lab, "admin1", "10.100.0.20") == "open"
    async with running(_settings(lab, tmp_path)) as (_, base):
        body = _okta("user.account.report_suspicious_activity_by_enduser", "alice@example.com")
        sent = time.monotonic()
        async with http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r:
            assert r.status == 200

        async def cut_off() -> bool:
            return not await _peer_present(hub, str(admin1.public_key))

        await eventually(cut_off, 1.0, "admin1's peer removed from hub1")
        contained = time.monotonic() - sent
        assert contained < 1.0
        assert await tcp(lab, "admin1", "10.100.0.20") != "open"
        (decision,) = await _decisions(http, base)
        assert (decision["response"], decision["subject"], decision["state"]) == (
            "cut-off", "user:alice@example.com", "active",
        )  # fmt: skip
        async with http.get(f"{base}/api/decisions/{decision['id']}", headers=ADMIN_HEADERS) as r:
            shown = await r.json()
        assert {a["action"]["type"] for a in shown["actions"]} == {"delete_element", "kill_flows", "remove_peer"}
        assert all(a["verified"] for a in shown["actions"]), shown["actions"]

        await _operate(http, base, decision["id"], "undo")

        async def restored() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

        await eventually(restored, 5, "admin1 reaches app1 again after undo")
        async with http.post(f"{base}/api/decisions/{decision['id']}/undo", headers=ADMIN_HEADERS) as r:
            assert r.status == 409  # undone already


async def test_drift_is_repaired_by_the_reconciler(
    lab: Lab, hub: SshHub, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    admin1 = next(p for p in lab.inventory.peers if p.name == "admin1")
    key = str(admin1.public_key)
    async with running(_settings(lab, tmp_path)) as (service, base):
        body = _okta("user.account.report_suspicious_activity_by_enduser", "alice@example.com")
        async with http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r:
            assert r.status == 200

        async def absent() -> bool:
            return not await _peer_present(hub, key)

        await eventually(absent, 2, "cut off")
        (decision,) = await _decisions(http, base)
        try:
            # The hub's WireGuard config is re-applied (a reboot, `wg syncconf`): the peer is back...
            assert (await lab.exec("hub1", "wg", "set", "wg0", "peer", key, "allowed-ips", "10.100.0.10/32")).ok
            # ...and its ruleset reloaded from the file: admin1 is in admin_devices again.
            assert (await lab.exec("hub1", "nft", "add", "element", "inet", "zerotrust", "admin_devices",
                                   "{ 10.100.0.10 }")).ok  # fmt: skip
            took = await eventually(absent, 3, "the reconciler removed the peer again")
            listing = await hub.call("list_set", {"table": "zerotrust", "set": "admin_devices"})
            assert "10.100.0.10" not in listing["elements"]
            assert took < 2 * service.settings.reconcile_interval_s + 1
            async with http.get(f"{base}/metrics", headers=ADMIN_HEADERS) as r:
                metrics = await r.text()
            assert 'responder_drift_total{action="remove_peer",hub="hub1"}' in metrics
            assert 'responder_drift_total{action="delete_element",hub="hub1"}' in metrics
        finally:
            await _operate(http, base, decision["id"], "undo")

        async def restored() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

        await eventually(restored, 5, "restored after undo")


async def test_a_wazuh_alert_through_kafka_quarantines_and_the_quarantine_expires(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"wazuh-{uuid.uuid4().hex[:6]}"
    rules = _rules(tmp_path, **{"    actions: [quarantine]\n    ttl: 1h": "    actions: [quarantine]\n    ttl: 3s"})
    kafka = Kafka(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", topics=(KafkaTopic(name=topic, format="wazuh"),),
        dead_letter_topic=f"dead-{topic}",
    )  # fmt: skip
    alert = payload("siem/wazuh.json")
    alert["id"] = f"e2e-{uuid.uuid4().hex}"
    alert["data"]["srcip"] = "10.100.0.10"  # admin1 attacks app1
    alert["agent"]["ip"] = "198.51.100.1"  # the agent's own address is not a lab peer
    assert await tcp(lab, "admin1", "10.100.0.20") == "open"
    async with running(_settings(lab, tmp_path, rules, kafka=kafka)) as (_, base):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            await producer.send_and_wait(topic, json.dumps(alert).encode())
        finally:
            await producer.stop()

        async def blocked() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.3) != "open"

        await eventually(blocked, 15, "admin1 quarantined after the Wazuh alert")
        (decision,) = await _decisions(http, base)
        assert (decision["response"], decision["subject"]) == ("quarantine", "user:alice@example.com")

        async def open_again() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

        await eventually(open_again, 8, "the quarantine expired")
        await asyncio.sleep(1.5)  # the service's own expiry pass
        states = {d["state"] for d in await _decisions(http, base)}
        assert states == {"expired"}


async def test_an_action_that_needs_approval_waits_for_it(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    rules = _rules(
        tmp_path,
        **{"    actions: [quarantine]\n    ttl: 1h": "    actions: [quarantine]\n    ttl: 1h\n    approval: true"},
    )
    async with running(_settings(lab, tmp_path, rules)) as (_, base):
        body = _okta("security.threat.detected", "alice@example.com")
        async with http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r:
            assert r.status == 200

        async def decided() -> bool:
            return bool(await _decisions(http, base))

        await eventually(decided, 2, "a decision")
        (decision,) = await _decisions(http, base)
        assert decision["state"] == "awaiting_approval"
        await asyncio.sleep(0.5)
        assert await tcp(lab, "admin1", "10.100.0.20") == "open"  # nothing enforced yet

        await _operate(http, base, decision["id"], "approve")

        async def blocked() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.3) != "open"

        await eventually(blocked, 3, "quarantined after approval")
        await _operate(http, base, decision["id"], "undo")

        async def open_again() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

        await eventually(open_again, 5, "open after undo")
