"""The hubs as a policy information point: poll `wg show <if> dump`, turn what changed into canonical events.

Every `interval_s` the monitor asks each hub for its peers (the `peers` operation, i.e. `wg show <if> dump`),
compares the listing with the previous one and hands the resulting events off like any other source
(`Handoff`, delivery id `hub:<hub>:<poll time>`, source "hub"). Event types (`source: hub`, `product`: the
hub's name, subjects: the peer's key and, when its allowed IPs hold a host route, its tunnel address):

- `handshake.stale`: keepalive is on but the latest handshake is older than `stale_after_s` (300 s, as the
  seed's check script). A peer that never completed a handshake counts from when the monitor first saw it
  (`never_handshaked: true`). One event per episode; a fresh handshake re-arms it. Attributes: `age_s`,
  `latest_handshake`, `keepalive`, `endpoint`, `interface`, `never_handshaked`.
- `transfer.spike`: the peer's rx+tx rate in one poll is above `max(spike_ratio x baseline, spike_floor_bps)`,
  the baseline being an exponentially weighted moving average of earlier polls' rates (after `warmup_polls`
  of them). One event per episode (re-armed when the rate drops back); spike samples stay out of the
  baseline so a sustained exfiltration does not become normal. Attributes: `ratio`, `rate_bps`,
  `baseline_bps`, `rx_bytes`, `tx_bytes` (in this poll), `interval_s`, `interface`.
- `peer.appeared` / `peer.disappeared`: a key was added to or removed from the interface by someone other
  than the responder. The executor notes its own changes in `OwnChanges`; keys noted within its grace window
  produce no event. The first listing of a hub is the starting point, not a change. Attributes:
  `endpoint`, `allowed_ips`, `keepalive`, `interface`.

Per-peer metrics use the names of the seed's Prometheus exporter: `wireguard_latest_handshake_seconds`
(epoch seconds, 0 = never), `wireguard_received_bytes_total`, `wireguard_sent_bytes_total`, plus
`wireguard_latest_handshake_age_seconds`; all labelled hub, interface, public_key and removed when the peer
goes. A hub that fails (down, timed out, refused) is counted and logged; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from responder.core.events import Event, Severity, Source, Subjects
from responder.core.identifiers import IPAddress, WireGuardKey, parse_address
from responder.ingest.handoff import Handoff
from responder.inventory import HubSpec
from responder.journal import DeliveryRecord, JournalUnavailable
from responder.pep.errors import HubError
from responder.pep.hub import STALE_AFTER_S

log = logging.getLogger(__name__)

STALE = "handshake.stale"
SPIKE = "transfer.spike"
APPEARED = "peer.appeared"
DISAPPEARED = "peer.disappeared"

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Thresholds:
    stale_after_s: float = STALE_AFTER_S
    spike_ratio: float = 10.0
    spike_floor_bps: float = 1_000_000.0  # below 1 MB/s nothing is a spike, however quiet the peer was
    warmup_polls: int = 5
    ewma_alpha: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError("ewma_alpha must be in (0, 1]")
        if self.spike_ratio <= 1 or self.warmup_polls < 1 or self.stale_after_s <= 0 or self.spike_floor_bps < 0:
            raise ValueError("spike_ratio > 1, warmup_polls >= 1, stale_after_s > 0 and spike_floor_bps >= 0")


class OwnChanges:
    """Peers the responder itself added or removed, so their coming and going is not reported as foreign.

    The executor calls `note(hub, key)` just before it changes a peer; the note holds for `grace_s`, which
    must cover the change itself plus the next poll (two polling intervals and a call timeout)."""

    def __init__(self, grace_s: float, clock: Clock = time.monotonic) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self._noted: dict[tuple[str, str], float] = {}

    def note(self, hub: str, key: str) -> None:
        now = self._clock()
        self._prune(now)
        self._noted[(hub, str(key))] = now

    def recent(self, hub: str, key: str) -> bool:
        at = self._noted.get((hub, str(key)))
        return at is not None and self._clock() - at <= self.grace_s

    def _prune(self, now: float) -> None:
        for k in [k for k, at in self._noted.items() if now - at > self.grace_s]:
            del self._noted[k]


@dataclass(frozen=True, slots=True)
class PeerSample:
    """One peer of a `peers` answer, checked: the key and addresses end up in events the PDP acts on."""

    key: WireGuardKey
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int
    rx: int
    tx: int
    keepalive: int | None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PeerSample:
        return cls(
            key=WireGuardKey(raw["key"]),
            endpoint=raw.get("endpoint") or None,
            allowed_ips=tuple(str(a) for a in raw.get("allowed_ips") or ()),
            latest_handshake=int(raw.get("latest_handshake") or 0),
            rx=int(raw.get("rx") or 0),
            tx=int(raw.get("tx") or 0),
            keepalive=int(raw["keepalive"]) if raw.get("keepalive") else None,
        )

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        """Tunnel addresses: host routes only (a /24 behind a site peer names no single device)."""
        out: list[IPAddress] = []
        for prefix in self.allowed_ips:
            address, _, length = prefix.partition("/")
            try:
                ip = parse_address(address)
            except ValueError:
                continue
            if not length or int(length) == ip.max_prefixlen:
                out.append(ip)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class PeerReading:
    """A peer's metric values at one poll. `handshake_age_s` is None when it never completed one."""

    key: str
    latest_handshake: int
    handshake_age_s: float | None
    rx: int
    tx: int


@dataclass(frozen=True, slots=True)
class Observation:
    events: tuple[Event, ...]
    readings: tuple[PeerReading, ...]
    gone: tuple[str, ...]  # keys whose metric label sets must be removed


@dataclass(slots=True)
class _Track:
    """What the monitor remembers of one peer between polls."""

    sample: PeerSample
    at: float
    first_seen: float
    baseline_bps: float | None = None
    rate_samples: int = 0
    in_spike: bool = False
    stale_reported: int | None = None  # the latest_handshake value of the episode already reported


class HubWatch:
    """The pure part of monitoring one hub: listings and times in, events and metric values out. No I/O."""

    def __init__(self, hub: str, interface: str, own_changes: OwnChanges, thresholds: Thresholds | None = None) -> None:
        self.hub = hub
        self.interface = interface
        self.own_changes = own_changes
        self.thresholds = thresholds or Thresholds()
        self._tracks: dict[str, _Track] | None = None  # None until the first listing

    def observe(self, peers: Iterable[Mapping[str, Any]], now: float) -> Observation:
        current: dict[str, PeerSample] = {}
        for raw in peers:
            try:
                sample = PeerSample.parse(raw)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("hub %s: ignoring a malformed peer entry: %s", self.hub, exc)
                continue
            current[sample.key] = sample
        first = self._tracks is None
        previous: dict[str, _Track] = self._tracks or {}
        events: list[Event] = []
        tracks: dict[str, _Track] = {}
        for key, sample in current.items():
            track = previous.get(key)
            if track is None:
                track = _Track(sample, now, first_seen=now)
                if not first:
                    events += self._membership(APPEARED, sample, now)
            else:
                events += self._transfer(track, sample, now)
                track.sample, track.at = sample, now
            events += self._stale(track, now)
            tracks[key] = track
        gone = [k for k in previous if k not in current]
        for key in gone:
            events += self._membership(DISAPPEARED, previous[key].sample, now)
        self._tracks = tracks
        readings = tuple(
            PeerReading(
                s.key,
                s.latest_handshake,
                max(0.0, now - s.latest_handshake) if s.latest_handshake else None,
                s.rx,
                s.tx,
            )
            for s in current.values()
        )
        return Observation(tuple(events), readings, tuple(gone))

    # -- the four kinds of event ---------------------------------------------------------------------------

    def _membership(self, kind: str, sample: PeerSample, now: float) -> list[Event]:
        if self.own_changes.recent(self.hub, sample.key):
            return []
        attributes = {
            "endpoint": sample.endpoint,
            "allowed_ips": list(sample.allowed_ips),
            "keepalive": sample.keepalive,
            "interface": self.interface,
        }
        severity = Severity.MEDIUM if kind == APPEARED else Severity.LOW  # an unknown key in is worse than out
        return [
            self._event(kind, sample, now, severity=severity, attributes=attributes, episode=f"{sample.key}:{now:.3f}")
        ]

    def _stale(self, track: _Track, now: float) -> list[Event]:
        s = track.sample
        if s.keepalive is None:  # without keepalive a quiet peer is a normal peer
            track.stale_reported = None
            return []
        never = s.latest_handshake == 0
        age = now - (track.first_seen if never else s.latest_handshake)
        if age <= self.thresholds.stale_after_s:
            track.stale_reported = None
            return []
        if track.stale_reported == s.latest_handshake:
            return []
        track.stale_reported = s.latest_handshake
        attributes = {
            "age_s": int(age),
            "latest_handshake": s.latest_handshake,
            "keepalive": s.keepalive,
            "endpoint": s.endpoint,
            "interface": self.interface,
            "never_handshaked": never,
        }
        # The episode is the handshake that went stale: the same key after a restart, so the journal dedups.
        return [
            self._event(
                STALE, s, now, severity=Severity.LOW, attributes=attributes, episode=f"{s.key}:{s.latest_handshake}"
            )
        ]

    def _transfer(self, track: _Track, sample: PeerSample, now: float) -> list[Event]:
        t = self.thresholds
        elapsed = now - track.at
        rx, tx = sample.rx - track.sample.rx, sample.tx - track.sample.tx
        if rx < 0 or tx < 0:  # counters went back: the peer was re-created, its history means nothing now
            track.baseline_bps, track.rate_samples, track.in_spike = None, 0, False
            return []
        if elapsed <= 0:
            return []
        rate = (rx + tx) / elapsed
        baseline = track.baseline_bps
        if baseline is not None and track.rate_samples >= t.warmup_polls:
            if rate > max(t.spike_ratio * baseline, t.spike_floor_bps):
                if track.in_spike:
                    return []
                track.in_spike = True
                attributes = {
                    "ratio": round(rate / max(baseline, 1.0), 1),
                    "rate_bps": round(rate, 1),
                    "baseline_bps": round(baseline, 1),
                    "rx_bytes": rx,
                    "tx_bytes": tx,
                    "interval_s": round(elapsed, 3),
                    "interface": self.interface,
                }
                episode = f"{sample.key}:{now:.3f}"
                return [
                    self._event(SPIKE, sample, now, severity=Severity.MEDIUM, attributes=attributes, episode=episode)
                ]
            track.in_spike = False
        track.baseline_bps = rate if baseline is None else baseline + t.ewma_alpha * (rate - baseline)
        track.rate_samples += 1
        return []

    def _event(
        self, kind: str, sample: PeerSample, now: float, *, severity: Severity, attributes: dict[str, Any], episode: str
    ) -> Event:
        key = f"hub:{self.hub}:{kind}:{episode}"
        return Event(
            id=key,
            source=Source.HUB,
            product=self.hub,
            type=kind,
            time=datetime.fromtimestamp(now, UTC),
            subjects=Subjects(keys=(sample.key,), addresses=sample.addresses),
            severity=severity,
            attributes=attributes,
            dedup_key=key,
        )


class MonitoredHub(Protocol):
    """What the monitor needs of a hub (`SshHub` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> HubSpec: ...
    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class _Gauges:
    registry: CollectorRegistry
    handshake: Gauge = field(init=False)
    handshake_age: Gauge = field(init=False)
    received: Gauge = field(init=False)
    sent: Gauge = field(init=False)
    polls: Counter = field(init=False)
    events: Counter = field(init=False)

    def __post_init__(self) -> None:
        r, labels = self.registry, ["hub", "interface", "public_key"]
        self.handshake = Gauge(
            "wireguard_latest_handshake_seconds", "Epoch seconds of the peer's latest handshake (0 = never)",
            labels, registry=r,
        )  # fmt: skip
        self.handshake_age = Gauge(
            "wireguard_latest_handshake_age_seconds", "Seconds since the peer's latest handshake", labels, registry=r
        )
        # Gauges, not counters: they mirror the kernel's counters, which drop to 0 when a peer is re-created.
        self.received = Gauge("wireguard_received_bytes_total", "Bytes received from the peer", labels, registry=r)
        self.sent = Gauge("wireguard_sent_bytes_total", "Bytes sent to the peer", labels, registry=r)
        self.polls = Counter(
            "responder_hub_polls", "Hub monitor polls, by hub and outcome", ["hub", "outcome"], registry=r
        )
        self.events = Counter(
            "responder_hub_monitor_events", "Events the hub monitor emitted, by hub and type", ["hub", "type"],
            registry=r,
        )  # fmt: skip

    def apply(self, hub: str, interface: str, observation: Observation) -> None:
        for reading in observation.readings:
            labels = (hub, interface, reading.key)
            self.handshake.labels(*labels).set(reading.latest_handshake)
            if reading.handshake_age_s is None:
                with contextlib.suppress(KeyError):
                    self.handshake_age.remove(*labels)
            else:
                self.handshake_age.labels(*labels).set(reading.handshake_age_s)
            self.received.labels(*labels).set(reading.rx)
            self.sent.labels(*labels).set(reading.tx)
        for key in observation.gone:
            for gauge in (self.handshake, self.handshake_age, self.received, self.sent):
                with contextlib.suppress(KeyError):
                    gauge.remove(hub, interface, key)
        for event in observation.events:
            self.events.labels(hub, event.type).inc()


class HubMonitor:
    """Polls every hub concurrently each `interval_s` and hands the events off. Run `run(stop)` as a task.

    Events whose hand-off fails are kept (at most `backlog_limit` deliveries) and offered again with the next
    poll; their dedup keys make the retry safe."""

    def __init__(
        self,
        hubs: Sequence[MonitoredHub],
        handoff: Handoff,
        registry: CollectorRegistry,
        *,
        own_changes: OwnChanges | None = None,
        interval_s: float = 10.0,
        poll_timeout_s: float = 5.0,
        thresholds: Thresholds | None = None,
        clock: Clock = time.time,
        backlog_limit: int = 1000,
    ) -> None:
        if interval_s <= 0 or poll_timeout_s <= 0:
            raise ValueError("interval_s and poll_timeout_s must be positive")
        self.interval_s = interval_s
        self.poll_timeout_s = poll_timeout_s
        self.own_changes = own_changes or OwnChanges(grace_s=2 * interval_s + poll_timeout_s)
        self._hubs = list(hubs)
        self._handoff = handoff
        self._clock = clock  # wall time: handshakes are epoch seconds
        self._watches = {h.name: HubWatch(h.name, h.spec.interface, self.own_changes, thresholds) for h in self._hubs}
        self._gauges = _Gauges(registry)
        self._backlog: list[tuple[DeliveryRecord, list[Event]]] = []
        self._backlog_limit = backlog_limit
        self._failing: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            await self.poll()
            remaining = self.interval_s - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, remaining))

    async def poll(self) -> list[Event]:
        """One round: every hub at once, then one hand-off. Returns the events of this round."""
        observed = await asyncio.gather(*(self._poll_hub(h) for h in self._hubs))
        items: list[tuple[DeliveryRecord, list[Event]]] = []
        fresh: list[Event] = []
        for hub, result in zip(self._hubs, observed, strict=True):
            if result is None:
                continue
            at, observation = result
            self._gauges.apply(hub.name, hub.spec.interface, observation)
            if observation.events:
                stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
                items.append((DeliveryRecord(f"hub:{hub.name}:{stamp}", "hub", stamp), list(observation.events)))
                fresh += observation.events
        await self._hand_off(items)
        return fresh

    async def _poll_hub(self, hub: MonitoredHub) -> tuple[float, Observation] | None:
        peers: Any = None
        failure: str | None = None
        try:
            async with asyncio.timeout(self.poll_timeout_s):
                answer = await hub.call("peers", {"interface": hub.spec.interface})
            peers = answer.get("peers")
        except HubError as exc:
            failure = str(exc)
        except TimeoutError:
            failure = f"no answer within {self.poll_timeout_s} s"
        except Exception as exc:  # a bug or an unwrapped transport error on one hub must not stop the others
            log.exception("hub monitor: unexpected error polling %s", hub.name)
            failure = f"{type(exc).__name__}: {exc}"
        if failure is None and not isinstance(peers, list):
            failure = f"the answer holds no peer list ({type(peers).__name__})"
        if failure is not None:
            self._gauges.polls.labels(hub.name, "error").inc()
            # At warning level once per outage: a hub that is down for an hour should not flood the log.
            level = logging.DEBUG if hub.name in self._failing else logging.WARNING
            log.log(level, "hub monitor: polling %s failed: %s", hub.name, failure)
            self._failing.add(hub.name)
            return None
        if hub.name in self._failing:
            self._failing.discard(hub.name)
            log.info("hub monitor: %s answers again", hub.name)
        self._gauges.polls.labels(hub.name, "ok").inc()
        now = self._clock()
        return now, self._watches[hub.name].observe(peers, now)

    async def _hand_off(self, items: list[tuple[DeliveryRecord, list[Event]]]) -> None:
        batch = self._backlog + items
        if not batch:
            return
        try:
            await self._handoff.accept_batch(batch)
        except JournalUnavailable:
            self._backlog = batch  # the journal says why, once a minute; the next poll tries again
        except Exception:
            # The state has moved on, so these events would not be produced again: keep them for the next poll.
            log.exception("hub monitor: handing %d deliveries off failed; retrying with the next poll", len(batch))
            self._backlog = batch
        else:
            self._backlog = []
        dropped = len(self._backlog) - self._backlog_limit
        if dropped > 0:
            log.error("hub monitor: hand-off backlog full, dropping the %d oldest deliveries", dropped)
            self._backlog = self._backlog[dropped:]
