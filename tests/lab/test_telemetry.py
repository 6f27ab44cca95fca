"""One trace from delivery to nft, the metrics after an incident, and the hub monitor as a source: on the
lab, through the real service."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from responder.config import Kafka, KafkaTopic, Settings
from responder.lab import Lab
from responder.pep import SshHub
from responder.telemetry.tracing import build_provider
from tests.support.payloads import payload
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
RULES = Path(__file__).resolve().parents[2] / "rules"
OKTA_SECRET, ADMIN = "okta-telemetry-secret", "admin-telemetry-token"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def _settings(lab: Lab, tmp: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "journal": f"sqlite:///{tmp}/journal.db", "inventory": lab.inventory_path, "rules": (RULES,),
        "okta_secret": OKTA_SECRET, "admin_token": ADMIN, "reconcile_interval_s": 3600,
        "monitor_interval_s": None,
    } | extra  # fmt: skip
    return Settings(**values)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _tree(spans: list[ReadableSpan], trace_id: str) -> dict[str, ReadableSpan]:
    mine = [s for s in spans if s.context is not None and f"{s.context.trace_id:032x}" == trace_id]
    return {s.name: s for s in mine}


def _parent(span: ReadableSpan) -> str:
    assert span.parent is not None, span.name
    return f"{span.parent.span_id:016x}"


def _id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


async def _undo_all(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(f"{base}/api/decisions", headers=ADMIN_HEADERS) as r:
        decisions = (await r.json())["decisions"]
    for d in decisions:
        if d["state"] == "active":
            async with http.post(f"{base}/api/decisions/{d['id']}/undo", headers=ADMIN_HEADERS, json={}) as r:
                assert r.status == 202


async def _open_again(lab: Lab) -> None:
    async def check() -> bool:
        return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

    await eventually(check, 10, "admin1 reaches app1 again")


async def test_one_okta_delivery_is_one_trace_down_to_the_hub_and_metrics_count_it(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = build_provider(SimpleSpanProcessor(exporter))
    traceparent, trace_id, remote_parent = _traceparent()
    body = copy.deepcopy(payload("okta/batch.json"))
    body["data"]["events"] = body["data"]["events"][:1]  # alice's report: cut-off
    body["data"]["events"][0]["uuid"] = str(uuid.uuid4())
    body["eventId"] = str(uuid.uuid4())
    async with running(_settings(lab, tmp_path), tracer_provider=provider) as (_, base):
        headers = {"Authorization": OKTA_SECRET, "traceparent": traceparent}
        async with http.post(f"{base}/hooks/okta", json=body, headers=headers) as r:
            assert r.status == 200

        async def enforced() -> bool:
            return "hub remove_peers" in _tree(list(exporter.get_finished_spans()), trace_id)

        try:
            await eventually(enforced, 5, "the hub operations are in the trace")
            await asyncio.sleep(0.2)  # the enforce span ends after its last operation
            tree = _tree(list(exporter.get_finished_spans()), trace_id)
            assert _parent(tree["delivery okta"]) == remote_parent
            assert _parent(tree["journal.accept"]) == _id(tree["delivery okta"])
            assert _parent(tree["decide"]) == _id(tree["delivery okta"])
            assert _parent(tree["enforce hub1"]) == _id(tree["decide"])
            for op in ("hub elements", "hub kill_flows", "hub remove_peers"):
                assert _parent(tree[op]) == _id(tree["enforce hub1"])
                assert tree[op].attributes is not None and tree[op].attributes["responder.verified"] is True
            decide = tree["decide"].attributes or {}
            assert "okta-suspicious-activity-reported" in list(decide["responder.rules"])  # type: ignore[arg-type]
            assert any("cut-off" in d for d in decide["responder.decisions"])  # type: ignore[union-attr]

            async with http.get(f"{base}/metrics", headers=ADMIN_HEADERS) as r:
                metrics = await r.text()
            assert "responder_containment_seconds_count 1.0" in metrics
            for action in ("delete_element", "kill_flows", "remove_peer"):
                assert f'responder_actions_total{{outcome="ok",type="{action}",verified="True"}} 1.0' in metrics
            assert 'responder_decisions_total{response="cut-off",state="active"} 1.0' in metrics
        finally:
            await _undo_all(http, base)
            await _open_again(lab)


async def test_a_kafka_alert_continues_the_trace_of_its_message_headers(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path, kafka_bootstrap: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = build_provider(SimpleSpanProcessor(exporter))
    traceparent, trace_id, remote_parent = _traceparent()
    topic = f"wazuh-trace-{uuid.uuid4().hex[:6]}"
    kafka = Kafka(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", topics=(KafkaTopic(name=topic, format="wazuh"),),
        dead_letter_topic=f"dead-{topic}",
    )  # fmt: skip
    alert = payload("siem/wazuh.json") | {"id": f"trace-{uuid.uuid4().hex}"}
    alert["data"]["srcip"] = "10.100.0.10"
    async with running(_settings(lab, tmp_path, kafka=kafka), tracer_provider=provider) as (_, base):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, json.dumps(alert).encode(), headers=[("traceparent", traceparent.encode())]
            )
        finally:
            await producer.stop()

        async def enforced() -> bool:
            return "hub elements" in _tree(list(exporter.get_finished_spans()), trace_id)

        try:
            await eventually(enforced, 20, "the quarantine is in the trace")
            await asyncio.sleep(0.2)
            tree = _tree(list(exporter.get_finished_spans()), trace_id)
            assert _parent(tree[f"consume {topic}"]) == remote_parent
            assert _parent(tree["decide"]) == _id(tree[f"consume {topic}"])
            assert _parent(tree["enforce hub1"]) == _id(tree["decide"])
            assert _parent(tree["hub elements"]) == _id(tree["enforce hub1"])
        finally:
            await _undo_all(http, base)
            await _open_again(lab)


async def test_a_silent_peer_becomes_a_stale_handshake_event_that_the_rules_score(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    admin1 = next(p for p in lab.inventory.peers if p.name == "admin1")
    key = str(admin1.public_key)
    hub = SshHub(lab.inventory.hub("hub1"))
    threshold, interval = 4.0, 0.5
    block = ["nft", "add", "table", "inet", "silence"]
    chain = ["nft", "add", "chain", "inet", "silence", "out", "{", "type", "filter", "hook", "output", "priority",
             "0", ";", "policy", "accept", ";", "}"]  # fmt: skip
    rule = ["nft", "add", "rule", "inet", "silence", "out", "udp", "dport", "51820", "drop"]
    try:
        # A fresh handshake first, so that the threshold is what makes the event, not an old handshake.
        dump = (await hub.call("peers", {"interface": "wg0"}))["peers"]
        endpoint = next(p["endpoint"] for p in dump if p["key"] == key)
        assert (await lab.exec("hub1", "wg", "set", "wg0", "peer", key, "remove")).ok
        assert (await lab.exec("hub1", "wg", "set", "wg0", "peer", key, "allowed-ips", "10.100.0.10/32",
                               "endpoint", endpoint, "persistent-keepalive", "25")).ok  # fmt: skip
        await _open_again(lab)
        async with running(_settings(lab, tmp_path, monitor_interval_s=interval, monitor_stale_after_s=threshold)) as (
            _,
            base,
        ):
            for argv in (block, chain, rule):  # admin1 falls silent: its WireGuard packets no longer leave
                assert (await lab.exec("admin1", *argv)).ok
            peers = (await hub.call("peers", {"interface": "wg0"}))["peers"]
            last = next(p["latest_handshake"] for p in peers if p["key"] == key)
            assert last > 0

            async def scored() -> bool:
                async with http.get(f"{base}/api/subjects/user:alice@example.com", headers=ADMIN_HEADERS) as r:
                    return "hub-stale-handshake" in (await r.json())["signals"]

            await eventually(scored, threshold + 10, "the rules scored the stale handshake")
            seen = time.time()
            assert seen >= last + threshold  # not before the threshold...
            assert seen <= last + threshold + 2 * interval + 1.5  # ...and within an interval after it
            async with http.get(f"{base}/api/subjects/user:alice@example.com", headers=ADMIN_HEADERS) as r:
                state = await r.json()
            assert state["score"] == pytest.approx(20, abs=0.5)
    finally:
        await lab.exec("admin1", "nft", "delete", "table", "inet", "silence")
        await hub.close()
        await _open_again(lab)
