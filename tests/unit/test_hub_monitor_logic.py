"""The hub monitor's pure part (listings and times in, events and metric values out) and its polling loop
against fake hubs: stale handshakes, foreign peer changes, transfer spikes, hub failures, hand-off retries."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from responder.core.events import Event, Source
from responder.inventory import HubSpec
from responder.journal import Accepted, DeliveryRecord
from responder.monitor import (
    APPEARED,
    DISAPPEARED,
    SPIKE,
    STALE,
    HubMonitor,
    HubWatch,
    OwnChanges,
    Thresholds,
)
from responder.pep.errors import HubUnreachable

HUB = "hub1"


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


A, B, C = key(1), key(2), key(3)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def peer(
    k: str, *, ip: str = "10.100.0.10", handshake: int = 0, rx: int = 0, tx: int = 0, keepalive: int | None = 25
) -> dict[str, Any]:
    return {
        "key": k,
        "endpoint": "192.0.2.1:51820",
        "allowed_ips": [f"{ip}/32"],
        "latest_handshake": handshake,
        "rx": rx,
        "tx": tx,
        "keepalive": keepalive,
    }


def watch(thresholds: Thresholds | None = None, own: OwnChanges | None = None) -> HubWatch:
    return HubWatch(HUB, "wg0", own or OwnChanges(grace_s=20, clock=FakeClock()), thresholds)


def types(events: Sequence[Event]) -> list[tuple[str, str]]:
    return [(e.type, str(e.subjects.keys[0])) for e in events]


# -- stale handshakes -----------------------------------------------------------------------------------------


def test_a_handshake_older_than_300_s_with_keepalive_on_is_stale() -> None:
    w = watch()
    assert w.observe([peer(A, handshake=1000)], now=1300).events == ()  # exactly 300 s is not yet stale
    (event,) = w.observe([peer(A, handshake=1000)], now=1301).events
    assert event.type == STALE
    assert event.source is Source.HUB
    assert event.product == HUB
    assert event.attributes["age_s"] == 301
    assert event.attributes["never_handshaked"] is False
    assert event.subjects.keys == (A,)
    assert event.subjects.addresses == (ip_address("10.100.0.10"),)
    assert event.dedup_key == f"hub:{HUB}:{STALE}:{A}:1000"
    assert Event.model_validate_json(event.model_dump_json()) == event


def test_without_keepalive_an_old_handshake_is_not_stale() -> None:
    w = watch()
    assert w.observe([peer(A, handshake=1000, keepalive=None)], now=99_999).events == ()
    assert w.observe([peer(A, handshake=0, keepalive=None)], now=199_999).events == ()


def test_a_stale_episode_is_reported_once_and_rearmed_by_a_fresh_handshake() -> None:
    w = watch()
    first = w.observe([peer(A, handshake=1000)], now=1400).events
    assert types(first) == [(STALE, A)]
    assert w.observe([peer(A, handshake=1000)], now=1500).events == ()
    assert w.observe([peer(A, handshake=1000)], now=5000).events == ()
    assert w.observe([peer(A, handshake=5100)], now=5110).events == ()  # fresh again
    (second,) = w.observe([peer(A, handshake=5100)], now=5401).events
    assert second.dedup_key == f"hub:{HUB}:{STALE}:{A}:5100"
    assert second.dedup_key != first[0].dedup_key


def test_the_same_episode_gets_the_same_dedup_key_after_a_restart() -> None:
    (before,) = watch().observe([peer(A, handshake=1000)], now=1400).events
    (after,) = watch().observe([peer(A, handshake=1000)], now=2000).events
    assert before.dedup_key == after.dedup_key


def test_a_peer_with_keepalive_that_never_handshakes_is_stale_300_s_after_it_was_first_seen() -> None:
    w = watch()
    assert w.observe([peer(A)], now=10_000).events == ()
    assert w.observe([peer(A)], now=10_300).events == ()
    (event,) = w.observe([peer(A)], now=10_301).events
    assert event.type == STALE
    assert event.attributes["never_handshaked"] is True
    assert event.attributes["age_s"] == 301
    assert w.observe([peer(A)], now=10_400).events == ()  # same episode
    # Its first handshake ends the episode; that handshake going stale is a new one.
    assert w.observe([peer(A, handshake=10_500)], now=10_500).events == ()
    assert types(w.observe([peer(A, handshake=10_500)], now=10_900).events) == [(STALE, A)]


# -- peers appearing and disappearing -------------------------------------------------------------------------


def test_the_first_listing_is_the_starting_point_not_a_change() -> None:
    w = watch()
    assert w.observe([peer(A, handshake=99), peer(B, ip="10.100.0.20", handshake=99)], now=100).events == ()


def test_peers_appearing_and_disappearing_are_reported_with_key_and_address() -> None:
    w = watch()
    w.observe([peer(A, handshake=99)], now=100)
    (appeared,) = w.observe([peer(A, handshake=99), peer(B, ip="10.100.0.20", handshake=105)], now=110).events
    assert appeared.type == APPEARED
    assert appeared.subjects.keys == (B,)
    assert appeared.subjects.addresses == (ip_address("10.100.0.20"),)
    assert appeared.attributes["allowed_ips"] == ["10.100.0.20/32"]
    assert appeared.attributes["interface"] == "wg0"
    (disappeared,) = w.observe([peer(B, ip="10.100.0.20", handshake=105)], now=120).events
    assert disappeared.type == DISAPPEARED
    assert disappeared.subjects.keys == (A,)
    assert disappeared.subjects.addresses == (ip_address("10.100.0.10"),)
    assert disappeared.dedup_key != appeared.dedup_key
    assert w.observe([peer(B, ip="10.100.0.20", handshake=105)], now=130).events == ()


def test_only_host_routes_become_subject_addresses() -> None:
    w = watch()
    w.observe([], now=100)
    site = {**peer(A), "allowed_ips": ["10.100.0.10/32", "192.168.5.0/24", "fd00::7/128"]}
    (event,) = w.observe([site], now=110).events
    assert event.subjects.addresses == (ip_address("10.100.0.10"), ip_address("fd00::7"))


def test_changes_the_responder_made_itself_are_not_reported_within_the_grace_window() -> None:
    clock = FakeClock(1000)
    own = OwnChanges(grace_s=20, clock=clock)
    w = watch(own=own)
    w.observe([peer(A, handshake=999), peer(B, ip="10.100.0.20", handshake=999)], now=1000)
    own.note(HUB, A)
    clock.now = 1010
    assert w.observe([peer(B, ip="10.100.0.20", handshake=999)], now=1010).events == ()
    clock.now = 1020
    assert w.observe([peer(A, handshake=999), peer(B, ip="10.100.0.20", handshake=999)], now=1020).events == ()
    # The note has expired: the same change made by someone else is reported again.
    clock.now = 1030
    assert types(w.observe([peer(B, ip="10.100.0.20", handshake=999)], now=1030).events) == [(DISAPPEARED, A)]


def test_a_note_is_per_hub_and_per_key() -> None:
    clock = FakeClock(0)
    own = OwnChanges(grace_s=5, clock=clock)
    own.note(HUB, A)
    assert own.recent(HUB, A)
    assert not own.recent(HUB, B)
    assert not own.recent("hub2", A)
    clock.now = 5
    assert own.recent(HUB, A)
    clock.now = 5.1
    assert not own.recent(HUB, A)
    own.note(HUB, B)  # pruning on note keeps the table small
    assert list(own._noted) == [(HUB, B)]


# -- transfer spikes ------------------------------------------------------------------------------------------


SPIKY = Thresholds(spike_ratio=10, spike_floor_bps=10_000, warmup_polls=3, ewma_alpha=0.5)


def feed(w: HubWatch, rates: Sequence[float], *, start: float = 1000, step: float = 10) -> list[list[Event]]:
    """One listing per rate (bytes/s, split evenly between rx and tx), `step` seconds apart."""
    out, total, now = [], 0.0, start
    out.append(list(w.observe([peer(A, handshake=int(now))], now=now).events))
    for rate in rates:
        now += step
        total += rate * step
        half = int(total / 2)
        out.append(list(w.observe([peer(A, handshake=int(now), rx=half, tx=half)], now=now).events))
    return out


def test_a_rate_far_above_the_baseline_is_a_spike_after_warm_up() -> None:
    polls = feed(watch(SPIKY), [1000, 1000, 1000, 50_000])
    assert polls[:4] == [[], [], [], []]
    (spike,) = polls[4]
    assert spike.type == SPIKE
    assert spike.attributes["rate_bps"] == 50_000
    assert spike.attributes["baseline_bps"] == 1000
    assert spike.attributes["ratio"] == 50.0
    assert spike.attributes["rx_bytes"] + spike.attributes["tx_bytes"] == 500_000
    assert spike.subjects.keys == (A,)


def test_no_spike_during_warm_up() -> None:
    assert all(events == [] for events in feed(watch(SPIKY), [1000, 90_000, 1000]))


def test_a_rate_above_the_ratio_but_under_the_floor_is_not_a_spike() -> None:
    assert all(events == [] for events in feed(watch(SPIKY), [100, 100, 100, 9_000]))


def test_a_long_spike_is_one_event_and_a_new_one_after_the_rate_dropped_is_another() -> None:
    polls = feed(watch(SPIKY), [1000, 1000, 1000, 50_000, 60_000, 70_000, 1000, 80_000])
    spikes = [e for events in polls for e in events]
    assert [e.type for e in spikes] == [SPIKE, SPIKE]
    assert spikes[0].dedup_key != spikes[1].dedup_key
    # The spike samples stayed out of the baseline: it is still the quiet rate.
    assert spikes[1].attributes["baseline_bps"] == 1000


def test_counters_going_back_restart_the_baseline_instead_of_raising_a_spike() -> None:
    w = watch(SPIKY)
    feed(w, [1000, 1000, 1000])
    assert w.observe([peer(A, handshake=1040, rx=10, tx=10)], now=1040).events == ()
    # A new warm-up is needed before anything counts as a spike.
    assert w.observe([peer(A, handshake=1050, rx=500_000, tx=500_000)], now=1050).events == ()


# -- metric values and robustness -----------------------------------------------------------------------------


def test_readings_carry_handshake_age_and_transfer_and_gone_names_removed_peers() -> None:
    w = watch()
    first = w.observe([peer(A, handshake=900, rx=5, tx=7), peer(B, ip="10.100.0.20")], now=1000)
    readings = {r.key: r for r in first.readings}
    assert readings[A].handshake_age_s == 100
    assert (readings[A].latest_handshake, readings[A].rx, readings[A].tx) == (900, 5, 7)
    assert readings[B].handshake_age_s is None
    assert first.gone == ()
    assert w.observe([peer(B, ip="10.100.0.20")], now=1010).gone == (A,)


def test_malformed_peer_entries_are_skipped() -> None:
    w = watch()
    observation = w.observe([{"key": "not-a-key"}, {"no": "key"}, peer(A, handshake=999)], now=1000)
    assert [r.key for r in observation.readings] == [A]


@pytest.mark.parametrize(
    "kwargs",
    [{"ewma_alpha": 0}, {"ewma_alpha": 1.5}, {"spike_ratio": 1}, {"warmup_polls": 0}, {"stale_after_s": 0}],
)
def test_nonsensical_thresholds_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Thresholds(**kwargs)


# -- the polling loop, against fake hubs ----------------------------------------------------------------------


class FakeHub:
    def __init__(self, name: str, peers: list[dict[str, Any]]) -> None:
        self.name = name
        self.spec = HubSpec.model_validate(
            {
                "name": name,
                "ssh": {"host": "192.0.2.1", "user": "responder", "host_key": _HOST_KEY, "client_key": "/dev/null"},
                "tunnel_network": "10.100.0.0/24",
                "address": "10.100.0.1",
            }
        )
        self.peers = peers
        self.failure: Exception | None = None
        self.delay = 0.0

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        assert (op, args) == ("peers", {"interface": "wg0"})
        await asyncio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        return {"peers": [dict(p) for p in self.peers]}


_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ4a2V5Zm9ydGVzdHNvbmx5bm90YXJlYWxrZXkxMjM0"


class FakeHandoff:
    def __init__(self) -> None:
        self.deliveries: list[tuple[DeliveryRecord, list[Event]]] = []
        self.fail = False

    async def accept(self, delivery: DeliveryRecord, events: Sequence[Event]) -> Accepted:
        (accepted,) = await self.accept_batch([(delivery, events)])
        return accepted

    async def accept_batch(self, items: Sequence[tuple[DeliveryRecord, Sequence[Event]]]) -> list[Accepted]:
        if self.fail:
            raise OSError("journal unavailable")
        self.deliveries += [(d, list(e)) for d, e in items]
        return [Accepted(tuple(range(len(e)))) for _, e in items]


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_one_failing_or_slow_hub_does_not_stop_the_others() -> None:
    good = FakeHub("hub1", [peer(A, handshake=1000)])
    down = FakeHub("hub2", [peer(B)])
    slow = FakeHub("hub3", [peer(C)])
    down.failure = HubUnreachable("hub2", "connection refused")
    slow.delay = 5
    registry, handoff, clock = CollectorRegistry(), FakeHandoff(), FakeClock(1000)
    monitor = HubMonitor([good, down, slow], handoff, registry, interval_s=1, poll_timeout_s=0.2, clock=clock)
    assert await monitor.poll() == []
    good.peers.append(peer(B, ip="10.100.0.20", handshake=1000))
    clock.now = 1001
    events = await monitor.poll()
    assert types(events) == [(APPEARED, B)]
    ((delivery, handed),) = handoff.deliveries
    assert delivery.id.startswith("hub:hub1:") and delivery.source == "hub"
    assert handed == events
    assert _sample(registry, "responder_hub_polls_total", hub="hub1", outcome="ok") == 2
    assert _sample(registry, "responder_hub_polls_total", hub="hub2", outcome="error") == 2
    assert _sample(registry, "responder_hub_polls_total", hub="hub3", outcome="error") == 2
    labels = {"hub": "hub1", "interface": "wg0", "public_key": A}
    assert _sample(registry, "wireguard_latest_handshake_seconds", **labels) == 1000
    assert _sample(registry, "wireguard_latest_handshake_age_seconds", **labels) == 1


async def test_metrics_of_a_peer_that_goes_are_removed() -> None:
    hub = FakeHub("hub1", [peer(A, handshake=900, rx=11, tx=22), peer(B, ip="10.100.0.20", handshake=900)])
    registry = CollectorRegistry()
    monitor = HubMonitor([hub], FakeHandoff(), registry, clock=FakeClock(1000))
    await monitor.poll()
    labels = {"hub": "hub1", "interface": "wg0", "public_key": A}
    assert _sample(registry, "wireguard_received_bytes_total", **labels) == 11
    assert _sample(registry, "wireguard_sent_bytes_total", **labels) == 22
    hub.peers = hub.peers[1:]
    await monitor.poll()
    text = generate_latest(registry).decode()
    assert A not in text
    assert B in text


async def test_events_whose_hand_off_failed_are_offered_again_with_the_next_poll() -> None:
    hub = FakeHub("hub1", [peer(A, handshake=999)])
    handoff, clock = FakeHandoff(), FakeClock(1000)
    monitor = HubMonitor([hub], handoff, CollectorRegistry(), clock=clock)
    await monitor.poll()
    hub.peers = []
    handoff.fail = True
    clock.now = 1010
    assert types(await monitor.poll()) == [(DISAPPEARED, A)]
    assert handoff.deliveries == []
    handoff.fail = False
    clock.now = 1020
    assert await monitor.poll() == []
    assert [types(events) for _, events in handoff.deliveries] == [[(DISAPPEARED, A)]]


async def test_run_polls_on_its_interval_until_stopped() -> None:
    hub = FakeHub("hub1", [peer(A, handshake=999)])
    registry = CollectorRegistry()
    monitor = HubMonitor([hub], FakeHandoff(), registry, interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 1)
    polls = _sample(registry, "responder_hub_polls_total", hub="hub1", outcome="ok")
    assert polls is not None and 3 <= polls <= 6


def test_the_default_grace_covers_two_intervals_and_a_call() -> None:
    monitor = HubMonitor([], FakeHandoff(), CollectorRegistry(), interval_s=10, poll_timeout_s=5)
    assert monitor.own_changes.grace_s == 25
