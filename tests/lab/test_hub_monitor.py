"""The hub monitor against the real hub: peers changed by hand are reported, the responder's own changes are
not, metrics carry every peer, and a burst of traffic through the tunnel is a spike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from responder.core.events import Event
from responder.ingest.handoff import JournalHandoff
from responder.inventory import PeerSpec
from responder.journal import Journal, open_journal
from responder.lab import Lab
from responder.monitor import APPEARED, DISAPPEARED, SPIKE, STALE, HubMonitor, OwnChanges, Thresholds
from responder.pep import SshHub
from responder.pep.wgdump import parse_dump

pytestmark = pytest.mark.lab

OWNER = "test"


@pytest.fixture
async def hub(lab: Lab) -> AsyncIterator[SshHub]:
    h = SshHub(lab.inventory.hub("hub1"))
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        yield j
    finally:
        await j.close()


def _peer(lab: Lab, name: str) -> PeerSpec:
    return next(p for p in lab.inventory.peers if p.name == name)


def _monitor(
    hub: SshHub,
    journal: Journal,
    registry: CollectorRegistry,
    own_changes: OwnChanges | None = None,
    thresholds: Thresholds | None = None,
) -> HubMonitor:
    return HubMonitor(
        [hub], JournalHandoff(journal, OWNER), registry,
        own_changes=own_changes, thresholds=thresholds, interval_s=0.2, poll_timeout_s=10,
    )  # fmt: skip


async def _hub_peers(lab: Lab) -> dict[str, dict[str, Any]]:
    result = await lab.exec("hub1", "wg", "show", "wg0", "dump", check=True)
    return parse_dump(result.stdout)


class HandRemoval:
    """Remove a peer by hand on the hub and put it back exactly as it was (endpoint, allowed IPs, keepalive)."""

    def __init__(self, lab: Lab, peer: PeerSpec) -> None:
        self.lab, self.peer, self.key = lab, peer, str(peer.public_key)

    async def __aenter__(self) -> HandRemoval:
        self.saved = (await _hub_peers(self.lab))[self.key]
        return self

    async def remove(self) -> None:
        await self.lab.exec("hub1", "wg", "set", "wg0", "peer", self.key, "remove", check=True)

    async def restore(self) -> None:
        argv = ["wg", "set", "wg0", "peer", self.key, "allowed-ips", ",".join(self.saved["allowed_ips"])]
        if self.saved["endpoint"]:
            argv += ["endpoint", str(self.saved["endpoint"])]
        if self.saved["keepalive"]:
            argv += ["persistent-keepalive", str(self.saved["keepalive"])]
        await self.lab.exec("hub1", *argv, check=True)

    async def __aexit__(self, *exc: object) -> None:
        # Always, even if the test restored it already: `wg set` is idempotent, and the lab is shared.
        await self.restore()
        # A re-created peer shows handshake 0 until the tunnel is back; the next tests expect it up.
        deadline = time.monotonic() + 30
        while not (await _hub_peers(self.lab))[self.key]["latest_handshake"]:
            assert time.monotonic() < deadline, f"{self.peer.name}'s tunnel did not come back"
            await asyncio.sleep(0.2)


def _of(events: Sequence[Event], kind: str, key: str) -> list[Event]:
    return [e for e in events if e.type == kind and str(e.subjects.keys[0]) == key]


async def test_a_peer_removed_and_re_added_by_hand_is_reported_and_journaled(
    lab: Lab, hub: SshHub, journal: Journal
) -> None:
    admin = _peer(lab, "admin1")
    key = str(admin.public_key)
    monitor = _monitor(hub, journal, CollectorRegistry())
    await monitor.poll()  # the starting point
    async with HandRemoval(lab, admin) as hand:
        await hand.remove()
        gone = await monitor.poll()
        (disappeared,) = _of(gone, DISAPPEARED, key)
        assert disappeared.product == "hub1"
        assert disappeared.subjects.addresses == (admin.tunnel_ip,)
        assert disappeared.attributes["allowed_ips"] == [f"{admin.tunnel_ip}/32"]
        await hand.restore()
        back = await monitor.poll()
        (appeared,) = _of(back, APPEARED, key)
        assert appeared.subjects.addresses == (admin.tunnel_ip,)
        assert appeared.attributes["keepalive"] == 25
        assert _of(await monitor.poll(), APPEARED, key) == []  # reported once
    stored = [Event.model_validate_json(s.body) for s in await journal.pending_events(OWNER)]
    assert [e.type for e in stored if str(e.subjects.keys[0]) == key] == [DISAPPEARED, APPEARED]
    assert {e.dedup_key for e in stored} >= {disappeared.dedup_key, appeared.dedup_key}


async def test_the_responders_own_changes_are_not_reported(lab: Lab, hub: SshHub, journal: Journal) -> None:
    app = _peer(lab, "app1")
    key = str(app.public_key)
    own = OwnChanges(grace_s=10)
    monitor = _monitor(hub, journal, CollectorRegistry(), own_changes=own)
    await monitor.poll()
    async with HandRemoval(lab, app) as hand:
        own.note("hub1", key)
        await hand.remove()
        assert _of(await monitor.poll(), DISAPPEARED, key) == []
        own.note("hub1", key)
        await hand.restore()
        assert _of(await monitor.poll(), APPEARED, key) == []
    assert [s for s in await journal.pending_events(OWNER) if key in s.body and "peer." in s.body] == []


async def test_every_peer_has_handshake_and_transfer_metrics(lab: Lab, hub: SshHub, journal: Journal) -> None:
    registry = CollectorRegistry()
    await _monitor(hub, journal, registry).poll()
    on_hub = await _hub_peers(lab)
    text = generate_latest(registry).decode()
    for peer in (p for p in lab.inventory.peers if p.hub == "hub1"):
        labels = {"hub": "hub1", "interface": "wg0", "public_key": str(peer.public_key)}
        for name in (
            "wireguard_latest_handshake_seconds",
            "wireguard_received_bytes_total",
            "wireguard_sent_bytes_total",
        ):
            assert registry.get_sample_value(name, labels) is not None, (name, peer.name)
        assert f'public_key="{peer.public_key}"' in text
        assert (
            registry.get_sample_value("wireguard_latest_handshake_seconds", labels)
            == (on_hub[str(peer.public_key)]["latest_handshake"])
        )
    assert registry.get_sample_value("responder_hub_polls_total", {"hub": "hub1", "outcome": "ok"}) == 1


async def test_a_burst_through_the_tunnel_is_a_spike(lab: Lab, hub: SshHub, journal: Journal) -> None:
    admin, app = _peer(lab, "admin1"), _peer(lab, "app1")
    thresholds = Thresholds(warmup_polls=2, spike_ratio=10, spike_floor_bps=20_000)
    monitor = _monitor(hub, journal, CollectorRegistry(), thresholds=thresholds)
    for _ in range(3):  # the starting point and two quiet rates for the baseline
        await monitor.poll()
        await asyncio.sleep(0.2)
    burst = await lab.exec(
        "admin1", "ping", "-q", "-c", "200", "-i", "0.002", "-s", "1200", "-W", "1", str(app.tunnel_ip), timeout=10
    )
    assert burst.ok, burst.stderr
    events = await monitor.poll()
    (spike,) = _of(events, SPIKE, str(admin.public_key))
    assert spike.attributes["rate_bps"] > 20_000
    assert spike.attributes["ratio"] >= 10
    assert spike.subjects.addresses == (admin.tunnel_ip,)


async def test_a_handshake_older_than_the_threshold_is_stale_once(lab: Lab, hub: SshHub, journal: Journal) -> None:
    # 300 s is too long for a test: a 1 s threshold shows the same path on real handshakes.
    app = _peer(lab, "app1")
    key = str(app.public_key)
    monitor = _monitor(hub, journal, CollectorRegistry(), thresholds=Thresholds(stale_after_s=1))
    stale: list[Event] = []
    deadline = time.monotonic() + 10
    while not stale:
        assert time.monotonic() < deadline, "no stale event within 10 s"
        stale = _of(await monitor.poll(), STALE, key)
        await asyncio.sleep(0.3)
    (event,) = stale
    assert event.attributes["age_s"] >= 1
    assert event.attributes["keepalive"] == 25
    assert event.dedup_key == f"hub:hub1:{STALE}:{key}:{event.attributes['latest_handshake']}"
    handshake = event.attributes["latest_handshake"]
    again = _of(await monitor.poll(), STALE, key)
    # Only a new handshake (a new episode) may be reported again.
    assert all(e.attributes["latest_handshake"] != handshake for e in again)
