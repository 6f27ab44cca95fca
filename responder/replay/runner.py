"""Replaying a case through the real path: the service started in-process on a free loopback port with a
fresh journal and secrets of its own, each delivery sent as its source sends it (HTTP to the webhook
routes with their handshakes, Kafka produce to a broker), each delivery's decisions and actions waited for
through the admin API, then the expectations checked and, in the lab, packets sent.

In the lab every case leaves the lab as it found it: every decision still in force (or waiting for
approval) is undone through the admin API afterwards, and the run waits until the case's reachability is
back to what it was before the first delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from responder.config import Kafka, KafkaTopic, Listen, Settings, Ssf
from responder.core.decisions import action_from_dict
from responder.core.identity import IdentityMap
from responder.inventory import Inventory
from responder.lab import Check, Expect, Lab
from responder.pep import SshHub
from responder.policy.testing import describe
from responder.replay.case import REDACTED, Case, DeliverySpec, Reach, format_offset
from responder.replay.clock import VirtualClock
from responder.replay.inventory import lab_shaped_inventory
from responder.replay.recorder import Recorder
from responder.replay.report import ActionView, CaseReport, DecisionView, Step
from responder.replay.transmitter import Transmitter
from responder.service.service import Service, hubs_from, load_inventory

LIVE = ("active", "awaiting_approval")
OPEN_INTENTS = ("pending", "running")
ROUTES = {"okta": "/hooks/okta", "entra": "/hooks/entra", "entra-lifecycle": "/hooks/entra/lifecycle"}
POLL_S = 0.02


@dataclass
class Options:
    lab: Lab | None = None  # enforce in this lab and probe it; None: dry-run
    dry_run: bool = False
    inventory: Path | None = None  # dry-run: decide against this; with a lab: the lab's hubs and more
    kafka: str | None = None  # the broker's bootstrap address, for cases with kafka deliveries
    speed: float | None = None  # None: virtual clock (no sleeping); X: sleep offset/X between deliveries
    rules: tuple[Path, ...] = (Path("rules"),)
    connectors: Path = Path("connectors")
    settle_timeout_s: float = 30.0
    restore_timeout_s: float = 30.0
    cleanup: bool = True
    recorder: Recorder | None = None  # fed every accepted delivery, as `responder run --record` does

    @property
    def mode(self) -> str:
        return "lab" if self.lab is not None and not self.dry_run else "dry-run"


class ReplayError(RuntimeError):
    """The case could not be run (not: its expectations failed)."""


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _ms(later: str | None, earlier: datetime) -> float | None:
    if not later:
        return None
    return round((_parse_time(later) - earlier).total_seconds() * 1000, 1)


class _Journal:
    """A read-only look at the run's SQLite journal: is everything delivered, decided and done?"""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        if not self._path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute(sql, args).fetchall()

    async def received_at(self, delivery_id: str) -> datetime | None:
        """When the service accepted the delivery (its wall clock), or None if it has not."""
        rows = await asyncio.to_thread(self._query, "SELECT received_at FROM deliveries WHERE id = ?", delivery_id)
        return _parse_time(rows[0][0]) if rows else None

    async def settled(self) -> bool:
        def check() -> bool:
            pending = self._query("SELECT count(*) FROM events WHERE status = 'pending'")
            running = self._query("SELECT count(*) FROM intents WHERE state IN (?, ?)", *OPEN_INTENTS)
            return bool(pending and running) and pending[0][0] == 0 and running[0][0] == 0

        return await asyncio.to_thread(check)


@dataclass
class _Sent:
    index: int  # 1-based
    at: float
    sent: datetime


@dataclass
class _State:
    seen: dict[str, DecisionView] = field(default_factory=dict)


class CaseRun:
    def __init__(self, case: Case, options: Options, report: CaseReport) -> None:
        self.case = case
        self.options = options
        self.report = report
        spec = case.spec
        self.clock = VirtualClock(spec.start)
        self.okta_secret = secrets.token_urlsafe(24)
        self.client_state = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(24)
        self.run_id = uuid.uuid4().hex[:10]
        self.transmitter: Transmitter | None = None
        self.topics: dict[str, str] = {}
        self.state = _State()
        self.inventory: Inventory | None = None
        self.names: dict[str, str] = {}
        self.base = ""
        self.http: aiohttp.ClientSession | None = None
        self.producer: Any = None
        self.journal: _Journal | None = None
        self.baseline: dict[Reach, str] = {}

    # -- setting up ------------------------------------------------------------------------------

    def _inventory_path(self, tmp: Path) -> Path:
        o, spec = self.options, self.case.spec
        if o.mode == "lab":
            assert o.lab is not None  # noqa: S101 - lab mode has a lab
            if o.lab.topology.hubs < spec.lab.hubs:
                raise ReplayError(f"the case needs a lab with {spec.lab.hubs} hubs; this one has {o.lab.topology.hubs}")
            # An inventory given with a lab adds to it (overlays beside the lab's hubs, say).
            return o.inventory or o.lab.inventory_path
        if o.inventory is not None:
            return o.inventory
        if spec.lab.inventory is not None:
            return self.case.resolve(spec.lab.inventory)
        if o.lab is not None:
            return o.lab.inventory_path
        path = tmp / "inventory.yaml"
        path.write_text(lab_shaped_inventory(spec.lab.hubs).to_yaml(), encoding="utf-8")
        return path

    def _ssf(self, tmp: Path) -> Ssf | None:
        ssf = [d for d in self.case.spec.deliveries if d.via == "ssf"]
        if not ssf:
            return None
        self.transmitter = Transmitter()
        jwks = tmp / "jwks.json"
        jwks.write_text(json.dumps(self.transmitter.jwks()), encoding="utf-8")
        claims = self.case.body_json(ssf[0])
        given = self.case.spec.ssf
        issuer = given.issuer or (claims.get("iss") if isinstance(claims, dict) else None)
        audience = given.audience or (claims.get("aud") if isinstance(claims, dict) else None)
        if isinstance(audience, list):
            audience = audience[0] if audience else None
        if not isinstance(issuer, str) or not isinstance(audience, str):
            raise ReplayError("ssf: set ssf.issuer and ssf.audience, or give iss and aud in the first SET")
        return Ssf(issuer=issuer, audience=audience, jwks_file=jwks)

    async def _kafka(self) -> Kafka | None:
        formats = sorted({f for d in self.case.spec.deliveries if (f := d.kafka_format)})
        if not formats:
            return None
        bootstrap = self.options.kafka
        if bootstrap is None:
            raise ReplayError("this case has kafka deliveries: a broker is needed (--kafka BOOTSTRAP)")
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415 - only with kafka

        self.topics = {f: f"replay-{self.run_id}-{f}" for f in formats}
        dead = f"replay-{self.run_id}-dead"
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, 1, 1) for t in [*self.topics.values(), dead]])
        finally:
            await admin.close()
        return Kafka(
            bootstrap_servers=bootstrap,
            group_id=f"replay-{self.run_id}",
            topics=tuple(KafkaTopic(name=t, format=f) for f, t in self.topics.items()),
            dead_letter_topic=dead,
        )

    async def _settings(self, tmp: Path) -> Settings:
        spec = self.case.spec
        inventory = self._inventory_path(tmp)
        self.inventory = Inventory.load(inventory)
        self.names = {str(p.public_key): p.name for p in self.inventory.peers}
        rules = tuple(self.case.resolve(p) for p in spec.rules) if spec.rules else self.options.rules
        return Settings(
            listen=Listen(host="127.0.0.1", port=0),
            journal=f"sqlite:///{tmp}/journal.db",
            inventory=inventory,
            rules=rules,
            connectors=self.options.connectors,
            okta_secret=self.okta_secret,
            entra_client_state=self.client_state,
            admin_token=self.admin_token,
            ssf=self._ssf(tmp),
            kafka=await self._kafka(),
            dry_run=self.options.mode == "dry-run",
            monitor_interval_s=None,
            reconcile_interval_s=5.0,
        )

    @contextlib.asynccontextmanager
    async def _service(self, settings: Settings) -> AsyncIterator[str]:
        service = Service(settings, hubs=hubs_from(load_inventory(settings)), instance="replay", clock=self.clock)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop), name=f"replay-service-{self.run_id}")
        try:
            async with asyncio.timeout(30):
                started = asyncio.create_task(service.started.wait())
                done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    started.cancel()
                    task.result()
                    raise ReplayError("the service stopped before it started")
            assert service.address is not None  # noqa: S101 - set before `started`
            host, port = service.address
            yield f"http://{host}:{port}"
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await asyncio.gather(task, return_exceptions=True)

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        with tempfile.TemporaryDirectory(prefix="responder-replay-") as tmp_name:
            tmp = Path(tmp_name)
            settings = await self._settings(tmp)
            self.journal = _Journal(tmp / "journal.db")
            timeout = aiohttp.ClientTimeout(total=15)
            async with aiohttp.ClientSession(timeout=timeout) as http, self._service(settings) as base:
                self.http, self.base = http, base
                try:
                    await self._baseline()
                    await self._play()
                    await self._check()
                finally:
                    try:
                        if self.options.cleanup and self.options.mode == "lab":
                            await self._cleanup()
                    finally:
                        if self.producer is not None:
                            await self.producer.stop()

    async def _play(self) -> None:
        spec = self.case.spec
        previous = 0.0
        for n, delivery in enumerate(spec.deliveries, start=1):
            await self._move_clock(previous, delivery.at)
            previous = delivery.at
            sent = _Sent(n, delivery.at, self.clock())
            await self._deliver(delivery, sent)
            await self._settle(f"delivery {n}")
            await self._collect(sent)
        if spec.advance is not None:
            await self._move_clock(previous, spec.advance)
            sent = _Sent(0, spec.advance, self.clock())
            self._step("clock", spec.advance, f"moved to +{format_offset(spec.advance)}: TTLs run out")
            await self._settle_expiry()
            await self._collect(sent)

    async def _move_clock(self, previous: float, to: float) -> None:
        if self.options.speed is not None and to > previous:
            await asyncio.sleep((to - previous) / self.options.speed)
        self.clock.advance_to(to)

    def _step(self, kind: str, at: float, text: str, **extra: Any) -> Step:
        step = Step(kind, f"+{format_offset(at)}", text, **extra)
        self.report.timeline.append(step)
        return step

    def _fail(self, message: str) -> None:
        self.report.failures.append(message)

    # -- deliveries ------------------------------------------------------------------------------

    def _headers(self, delivery: DeliverySpec, secret: str | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in delivery.headers.items():
            low = name.lower()
            if value == REDACTED:
                if low == "authorization" and secret is not None:
                    out["Authorization"] = secret
                continue
            out[name] = value
        if secret is not None and not any(k.lower() == "authorization" for k in out):
            out["Authorization"] = secret
        return out

    def _entra_body(self, delivery: DeliverySpec) -> bytes:
        raw = self.case.body_bytes(delivery)
        try:
            doc = json.loads(raw)
        except ValueError:
            return raw
        changed = False
        if isinstance(doc, dict) and isinstance(doc.get("value"), list):
            for item in doc["value"]:
                if isinstance(item, dict) and item.get("clientState", REDACTED) == REDACTED:
                    item["clientState"] = self.client_state
                    changed = True
        return json.dumps(doc).encode() if changed else raw

    async def _deliver(self, delivery: DeliverySpec, sent: _Sent) -> None:
        via = delivery.via
        if via.startswith("kafka:"):
            await self._produce(delivery, sent)
            return
        assert self.http is not None  # noqa: S101 - set in run()
        if via == "ssf":
            assert self.transmitter is not None  # noqa: S101 - made when a case has ssf deliveries
            body = self.transmitter.sign(self.case.body_json(delivery)).encode()
            headers = self._headers(delivery, None) | {"Content-Type": "application/secevent+jwt"}
            path = "/hooks/ssf"
        else:
            secret = self.okta_secret if via == "okta" else None
            body = self._entra_body(delivery) if via.startswith("entra") else self.case.body_bytes(delivery)
            headers = self._headers(delivery, secret)
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
            path = ROUTES[via]
        started = time.monotonic()
        async with self.http.post(self.base + path, data=body, headers=headers) as response:
            status = response.status
            text = (await response.text())[:300]
        took = round((time.monotonic() - started) * 1000, 1)
        ok = delivery.status == status if delivery.status is not None else 200 <= status < 300
        note = f" {delivery.note}" if delivery.note else ""
        self._step(
            "delivery", sent.at, f"#{sent.index} {via}: HTTP {status}{note}", latency_ms=took, ok=ok,
            data={"via": via, "status": status, "response": text},
        )  # fmt: skip
        if not ok:
            wanted = delivery.status if delivery.status is not None else "2xx"
            self._fail(f"~ delivery #{sent.index} ({via}): expected HTTP {wanted}, got {status} {text}")
        elif 200 <= status < 300 and self.options.recorder is not None:
            self.options.recorder.delivery(via, headers, body, self.clock())

    async def _produce(self, delivery: DeliverySpec, sent: _Sent) -> None:
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - only with kafka

        fmt = delivery.kafka_format
        assert fmt is not None and self.journal is not None  # noqa: S101 - kafka deliveries have a format
        if self.producer is None:
            self.producer = AIOKafkaProducer(bootstrap_servers=self.options.kafka, enable_idempotence=False)
            await self.producer.start()
        body = self.case.body_bytes(delivery)
        headers = [(k, v.encode()) for k, v in delivery.headers.items() if v != REDACTED]
        key = delivery.key.encode() if delivery.key is not None else None
        started = time.monotonic()
        meta = await self.producer.send_and_wait(self.topics[fmt], body, key=key, headers=headers or None)
        delivery_id = f"kafka:{meta.topic}:{meta.partition}:{meta.offset}"
        deadline = time.monotonic() + self.options.settle_timeout_s
        accepted = False
        while time.monotonic() < deadline:
            received = await self.journal.received_at(delivery_id)
            if received is not None:
                # Latencies of what follows count from the consumer's hand-off (the first delivery also
                # waits for the consumer group to form), in the service's virtual time.
                sent.sent = self.clock() - (datetime.now(UTC) - received)
                accepted = True
                break
            await asyncio.sleep(POLL_S)
        took = round((time.monotonic() - started) * 1000, 1)
        text = f"#{sent.index} {delivery.via}: produced to {meta.topic}@{meta.offset}, " + (
            "accepted" if accepted else "NOT accepted (dead-lettered?)"
        )
        self._step("delivery", sent.at, text, latency_ms=took, ok=accepted, data={"via": delivery.via})
        if not accepted:
            wait = self.options.settle_timeout_s
            self._fail(f"~ delivery #{sent.index} ({delivery.via}): not in the journal after {wait:g}s")
        elif self.options.recorder is not None:
            self.options.recorder.delivery(delivery.via, dict(delivery.headers), body, self.clock(), key=key)

    # -- waiting and reading back ----------------------------------------------------------------

    async def _settle(self, what: str) -> None:
        assert self.journal is not None  # noqa: S101 - set in run()
        deadline = time.monotonic() + self.options.settle_timeout_s
        while not await self.journal.settled():
            if time.monotonic() > deadline:
                raise ReplayError(f"{what}: events or actions still open after {self.options.settle_timeout_s:g}s")
            await asyncio.sleep(POLL_S)

    async def _settle_expiry(self) -> None:
        deadline = time.monotonic() + self.options.settle_timeout_s
        while True:
            now = self.clock().timestamp()
            due = [
                d for d in await self._api("/api/decisions?limit=1000")
                if d["state"] == "active" and d.get("expires_at") and d["expires_at"] <= now
            ]  # fmt: skip
            if not due:
                break
            if time.monotonic() > deadline:
                raise ReplayError(f"{len(due)} decisions past their TTL are still active")
            await asyncio.sleep(0.1)
        await self._settle("expiry")

    async def _api(self, path: str) -> Any:
        assert self.http is not None  # noqa: S101 - set in run()
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with self.http.get(self.base + path, headers=headers) as response:
            if response.status != 200:
                raise ReplayError(f"GET {path}: HTTP {response.status} {await response.text()}")
            body = await response.json()
        return body["decisions"] if path.startswith("/api/decisions?") else body

    async def _snapshot(self) -> list[dict[str, Any]]:
        listing = await self._api("/api/decisions?limit=1000")
        return [await self._api(f"/api/decisions/{d['id']}") for d in sorted(listing, key=lambda d: d["created_at"])]

    def _describe(self, action: dict[str, Any]) -> str:
        return describe(action_from_dict(action), self.names)

    async def _collect(self, sent: _Sent) -> None:
        """Read every decision back; steps for the new ones (and the new intents) of this delivery."""
        for d in await self._snapshot():
            known = self.state.seen.get(d["id"])
            intents = [
                ActionView(
                    self._describe(i["action"]),
                    i["kind"],
                    i["state"],
                    i["verified"],
                    i.get("result"),
                    _ms(i["updated_at"], sent.sent) if i["state"] in ("done", "failed") else None,
                )
                for i in d["actions"]
            ]
            view = DecisionView(
                id=d["id"],
                subject=d["subject"],
                response=d["response"],
                state=d["state"],
                approval=bool(d["body"].get("requires_approval")),
                actions=[self._describe(a) for a in d["body"].get("actions", [])],
                intents=intents,
                delivery=known.delivery if known else sent.index,
                latency_ms=known.latency_ms if known else _ms(d["created_at"], sent.sent),
                score=d["body"].get("score"),
            )
            self.state.seen[d["id"]] = view
            if known is None:
                self._step(
                    "decision", sent.at, f"{view.id} {view.subject} -> {view.response} [{view.state}]"
                    f" score {view.score}", latency_ms=view.latency_ms, data={"id": view.id},
                )  # fmt: skip
                for a in intents:
                    verified = {True: "verified", False: "NOT verified", None: "unverified"}[a.verified]
                    self._step(
                        "action", sent.at, f"{a.kind} {a.action}: {a.state}, {verified}",
                        latency_ms=a.latency_ms, ok=a.state != "failed", data={"decision": view.id},
                    )  # fmt: skip
            else:
                if known.state != view.state:
                    self._step("decision", sent.at, f"{view.id} {view.subject} -> {view.response}: now {view.state}")
                old = {(a.kind, a.action, a.state) for a in known.intents}
                for a in intents:
                    if (a.kind, a.action, a.state) not in old and a.kind == "undo":
                        self._step("action", sent.at, f"undo {a.action}: {a.state}", latency_ms=a.latency_ms)

    # -- expectations ----------------------------------------------------------------------------

    async def _check(self) -> None:
        decisions = list(self.state.seen.values())
        self.report.decisions = decisions
        enforced = sorted({a.action for d in decisions for a in d.intents if a.kind == "apply" and a.state == "done"})
        self.report.enforced = enforced
        lab_mode = self.options.mode == "lab"
        self._check_decisions(decisions, lab_mode)
        expect = self.case.spec.expect
        if expect.enforced is not None and lab_mode:
            wanted = sorted(expect.enforced)
            self.report.failures += [f"- enforced, missing: {a}" for a in wanted if a not in enforced]
            self.report.failures += [f"+ enforced, not expected: {a}" for a in enforced if a not in wanted]
            unverified = {
                a.action for d in decisions for a in d.intents
                if a.kind == "apply" and a.state == "done" and a.verified is not True
            }  # fmt: skip
            self.report.failures += [f"~ enforced but not verified: {a}" for a in sorted(unverified)]
        self._check_untouched(decisions)
        if lab_mode and expect.reachability:
            await self._check_reachability(expect.reachability)

    def _check_decisions(self, decisions: list[DecisionView], lab_mode: bool) -> None:
        unmatched = list(decisions)
        for exp in self.case.spec.expect.decisions:
            got = next((d for d in unmatched if (d.subject, d.response) == (exp.subject, exp.response)), None)
            label = f"{exp.subject} -> {exp.response}"
            if got is None:
                state = f" [{exp.state.value}]" if exp.state else ""
                others = [f"{d.subject} -> {d.response} [{d.state}]" for d in unmatched if d.subject == exp.subject]
                hint = f"; got instead: {'; '.join(others)}" if others else "; got nothing for this subject"
                self._fail(f"- expected: {label}{state}{hint}")
                continue
            unmatched.remove(got)
            if exp.state is not None and lab_mode and got.state != exp.state.value:
                self._fail(f"~ {label}: state: expected {exp.state.value}, got {got.state}")
            if exp.approval is not None and got.approval != exp.approval:
                self._fail(f"~ {label}: approval: expected {exp.approval}, got {got.approval}")
            if exp.actions is not None:
                wanted, actual = sorted(exp.actions), sorted(got.actions)
                self.report.failures += [f"~ {label}: action missing: {a}" for a in wanted if a not in actual]
                self.report.failures += [f"~ {label}: action not expected: {a}" for a in actual if a not in wanted]
        self.report.failures += [f"+ unexpected: {d.line()}" for d in unmatched]

    def _subject_targets(self, subject: str) -> tuple[set[str], set[str]]:
        """The addresses and peer names a subject's devices have."""
        identity = IdentityMap(self.inventory)
        key = subject if ":" in subject else (f"user:{subject}" if "@" in subject else f"device:{subject}")
        peers = identity.subject(key).peers
        return {str(p.tunnel_ip) for p in peers}, {p.name for p in peers}

    def _check_untouched(self, decisions: list[DecisionView]) -> None:
        for subject in self.case.spec.expect.untouched:
            key = subject if ":" in subject else (f"user:{subject}" if "@" in subject else f"device:{subject}")
            addresses, peers = self._subject_targets(key)
            for d in decisions:
                if d.subject == key:
                    self._fail(f"! untouched {key}: decided {d.line()}")
                    continue
                hit = [a for a in d.actions if set(a.split()[2:]) & (addresses | peers)]
                if hit:
                    self._fail(f"! untouched {key}: {d.id} ({d.subject} -> {d.response}) acts on it: {', '.join(hit)}")

    def _check_of(self, reach: Reach) -> Check:
        lab = self.options.lab
        assert lab is not None  # noqa: S101 - reachability is checked in the lab only
        try:
            address = ipaddress.ip_address(reach.dst)
            dst = reach.dst
        except ValueError:
            node = lab.topology.node(reach.dst)
            if node.tunnel is None:
                raise ReplayError(f"reachability: {reach.dst} has no tunnel address; give an address") from None
            address, dst = node.tunnel, node.name
        if not isinstance(address, ipaddress.IPv4Address):
            raise ReplayError("reachability: the lab is IPv4 only")
        lab.topology.node(reach.src)
        expect = Expect.ALLOW if reach.expect == "open" else Expect.DROP
        return Check(reach.src, dst, address, reach.proto, reach.port if reach.proto == "tcp" else None, expect, "case")

    async def _probe(self, reach: Reach) -> str:
        assert self.options.lab is not None  # noqa: S101 - lab only
        outcome = (await self.options.lab.probe(self._check_of(reach))).outcome
        return {"reply": "open", "no reply": "dropped"}.get(outcome, outcome)

    @staticmethod
    def _matches(reach: Reach, outcome: str) -> bool:
        return outcome != "open" if reach.expect == "closed" else outcome == reach.expect

    async def _baseline(self) -> None:
        if self.options.mode != "lab":
            return
        for reach in self.case.spec.expect.reachability:
            self.baseline[reach] = await self._probe(reach)

    async def _check_reachability(self, checks: Sequence[Reach]) -> None:
        at = self.case.spec.advance if self.case.spec.advance is not None else self.case.spec.deliveries[-1].at
        for reach in checks:
            label = self._check_of(reach).label
            # Enforcement is verified already; a short grace covers flows being torn down.
            deadline = time.monotonic() + 3
            while True:
                outcome = await self._probe(reach)
                if self._matches(reach, outcome) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            ok = self._matches(reach, outcome)
            self._step("probe", at, f"{label}: {outcome} (expected {reach.expect})", ok=ok)
            if not ok:
                self._fail(f"~ reachability {label}: expected {reach.expect}, got {outcome}")

    # -- leaving the lab as it was ---------------------------------------------------------------

    async def _cleanup(self) -> None:
        assert self.http is not None  # noqa: S101 - set in run()
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        notes = self.report.cleanup
        decisions = await self._snapshot()
        for d in decisions:
            if d["state"] in LIVE:
                url = f"{self.base}/api/decisions/{d['id']}/undo"
                async with self.http.post(url, headers=headers, json={"actor": "replay"}) as r:
                    verb = "rejected" if d["state"] == "awaiting_approval" else "undone"
                    notes.append(f"{d['id']} ({d['subject']} -> {d['response']}): {verb}, HTTP {r.status}")
                    if r.status != 202:
                        self._fail(f"! cleanup: undo {d['id']}: HTTP {r.status} {await r.text()}")
        await self._settle("cleanup")
        await self._undo_replaced(decisions)
        await self._restore_reachability()
        if any(a.kind == "apply" and a.state == "done" for d in self.state.seen.values() for a in d.intents):
            await self._lab_healthy()

    async def _lab_healthy(self) -> None:
        """The lab's own reachability matrix passes again: the next case finds it as this one did."""
        lab = self.options.lab
        assert lab is not None  # noqa: S101 - lab only
        started = time.monotonic()
        while True:
            failed = [p for p in await lab.matrix() if not p.passed]
            if not failed:
                self.report.cleanup.append(f"lab matrix healthy ({time.monotonic() - started:.1f}s)")
                return
            if time.monotonic() - started > self.options.restore_timeout_s:
                for p in failed:
                    self._fail(f"! cleanup: lab matrix: {p.check.label} is {p.outcome}, expected {p.check.expect}")
                return
            await asyncio.sleep(0.5)

    async def _undo_replaced(self, decisions: list[dict[str, Any]]) -> None:
        """A decision replaced by a stronger one keeps its actions on the hub, and the admin API cannot
        undo it: take back its reversible, restore-free actions on the hub directly."""
        assert self.inventory is not None  # noqa: S101 - set in run()
        left = [
            (d, action_from_dict(i["action"])) for d in decisions if d["state"] == "replaced"
            for i in d["actions"] if i["kind"] == "apply" and i["state"] == "done"
        ]  # fmt: skip
        for d, action in left:
            if action.type.value not in ("quarantine", "delete_element", "add_element"):
                if action.type.value != "kill_flows":
                    what = describe(action, self.names)
                    self._fail(f"! cleanup: {d['id']} was replaced; cannot take back {what}")
                continue
            hub = SshHub(self.inventory.hub(action.hub))
            try:
                result = await hub.undo(action, None)
            finally:
                await hub.close()
            what = describe(action, self.names)
            outcome = "ok" if result.ok else result.detail
            self.report.cleanup.append(f"{d['id']} (replaced): took back {what} on the hub: {outcome}")
            if not result.ok:
                self._fail(f"! cleanup: could not take back {what}: {result.detail}")

    async def _restore_reachability(self) -> None:
        if not self.baseline:
            return
        started = time.monotonic()
        pending = dict(self.baseline)
        while pending:
            for reach, before in list(pending.items()):
                if await self._probe(reach) == before:
                    del pending[reach]
            if not pending:
                break
            if time.monotonic() - started > self.options.restore_timeout_s:
                for reach, before in pending.items():
                    self._fail(f"! cleanup: {self._check_of(reach).label} is not back to {before}")
                return
            await asyncio.sleep(0.2)
        self.report.cleanup.append(f"reachability back to the baseline in {time.monotonic() - started:.1f}s")


async def replay_case(case: Case, options: Options) -> CaseReport:
    report = CaseReport(case.name, str(case.path), options.mode)
    started = time.monotonic()
    try:
        await CaseRun(case, options, report).run()
    except (ReplayError, OSError, ValueError) as exc:
        report.failures.append(f"! could not replay: {exc}")
    report.duration_s = time.monotonic() - started
    return report


async def replay_cases(cases: Sequence[Case], options: Options) -> list[CaseReport]:
    return [await replay_case(case, options) for case in cases]
