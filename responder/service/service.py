"""`responder run`: sources → journal → decision → enforcement → verification → journal, in one process.

The hubs are handed in (`hubs_from` builds them from the inventory, in `responder run`). Start: open the
journal, rebuild the engine's risk from recent events, resume unfinished intents and undos, then serve.
Each long-running part is a task of one TaskGroup. Stop (SIGTERM, SIGINT): close the HTTP server first so
no delivery is half accepted, stop the Kafka consumer (offsets are committed only after hand-off, so
nothing is lost), let the pipeline finish its event and running enforcement, then close the journal and
the hubs' connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from aiokafka import TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from responder.config import DEFAULT_LAB_INVENTORY, Enforcement, MetricsListen, Settings
from responder.console import DecisionFeed, console_routes
from responder.core.engine import Engine
from responder.core.identity import IdentityMap
from responder.executor import Executor
from responder.ingest.handoff import Handoff, JournalHandoff, ParsedEvents, Waking
from responder.ingest.kafka import AlertConsumer
from responder.ingest.okta_logs import SOURCE as OKTA_SYSTEM_LOG
from responder.ingest.scaleout import KafkaHandoff, Rebalanced, partition_of
from responder.ingest.webhooks import DeliveryRecorder, Webhooks, json_errors
from responder.inventory import Inventory
from responder.journal import Journal, open_journal
from responder.monitor import HubMonitor, Thresholds
from responder.notify.notifier import Notifier, notifier_from
from responder.overlays.adapters import open_overlay
from responder.overlays.base import OverlayHub
from responder.overlays.discovery import discovered_peers, with_peers
from responder.pep import Hub, SshHub
from responder.pep.transport import TransportSettings
from responder.policy import load_rules
from responder.service import sources
from responder.service.access import Access
from responder.service.admin import admin_routes, metrics_routes
from responder.service.certificate import Certificate, ListenerCertificate, load_certificate
from responder.service.chat import ChatPeople
from responder.service.guard import BlastRadius, ProtectedTargets
from responder.service.lifecycle import Lifecycle
from responder.service.links import ApprovalLinks, LinkSigner, link_routes
from responder.service.listener import AcceptErrors, CappedSite, connection_limit, only_this_host
from responder.service.operators import Operators, Role
from responder.service.pipeline import Pipeline
from responder.service.reconciler import Reconciler
from responder.service.reloading import RuleReloader
from responder.service.retention import Retention
from responder.service.slack import SlackInteractions, SlackSignature
from responder.telemetry.metrics import Metrics
from responder.telemetry.tracing import provider_from_environment, tracer

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def load_inventory(settings: Settings) -> Inventory | None:
    path: Path | None = settings.inventory
    if path is None and DEFAULT_LAB_INVENTORY.exists():
        path = DEFAULT_LAB_INVENTORY
    return Inventory.load(path) if path is not None else None


def hubs_from(
    inventory: Inventory | None, tracer: Tracer | None = None, enforcement: Enforcement | None = None
) -> dict[str, Hub]:
    """Every enforcement point the inventory lists, by name: its WireGuard hubs (over SSH) and its overlays.
    Nothing connects before it is first used. A hub that cannot be reached is not waited for: it is tried
    once, and the convergence loop (responder/service/reconciler.py) tries again."""
    if inventory is None:
        return {}
    e = enforcement or Enforcement()
    transport = TransportSettings(
        connect_timeout=e.connect_timeout_s, operation_timeout=e.operation_timeout_s, retries=0
    )
    hubs: dict[str, Hub] = {
        h.name: SshHub(h, transport, tracer, peers=inventory.allowed_ips(h.name)) for h in inventory.hubs
    }
    return hubs | {o.name: open_overlay(o) for o in inventory.overlays}


class Service:
    """`hubs`: every enforcement point by name (`hubs_from` builds them from the inventory; a test may pass
    others that implement the `Hub` protocol). The service closes them when it stops."""

    def __init__(
        self,
        settings: Settings,
        *,
        hubs: Mapping[str, Hub],
        instance: str | None = None,
        clock: Clock = _wall_clock,
        tracer_provider: TracerProvider | None = None,
        recorder: DeliveryRecorder | None = None,
        operators: Operators | None = None,
        own_process: bool = False,
    ) -> None:
        self._own_process = own_process  # the service is the process (`responder run`), not a guest in one
        self.settings = settings
        self.hubs = hubs
        self.recorder = recorder
        self._provider = tracer_provider or provider_from_environment()
        self._owns_provider = tracer_provider is None and self._provider is not None  # then flush it on stop
        self.tracer = tracer(self._provider) if self._provider is not None else trace.NoOpTracer()
        self.instance = instance or settings.instance or socket.gethostname()
        self.clock = clock
        self.metrics = Metrics()
        self.started = asyncio.Event()
        self.wake = asyncio.Event()  # new events are in the journal
        self.urgent = asyncio.Event()  # an urgent event is in the journal: a bulk batch stops early
        self.address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None  # when /metrics has a listener of its own
        self.lifecycle: Lifecycle | None = None
        self.slack: SlackInteractions | None = None  # with chat.slack
        self.links: ApprovalLinks | None = None  # with link_key and chat.link_base_url: links for notices
        self._ingest: AlertConsumer | None = None
        self.partitions_owned: set[int] = set()  # of the ingest topic, in scale-out mode
        self.reconciler: Reconciler | None = None
        self.rules: RuleReloader | None = None  # once the journal is open
        self.certificate: ListenerCertificate | None = None  # with listen.tls_cert, once the journal is open
        self.console_feed: DecisionFeed | None = None  # the console's live timeline, once it serves
        self.notifier: Notifier | None = None  # with notify.channels, once the journal is open
        self.access: Access | None = None  # who may call the service, once it starts
        self._given_operators = operators  # a test's own, instead of those built from the settings
        self.app: web.Application | None = None  # what it serves, once it starts (its router lists every route)

    @property
    def operators(self) -> Operators:
        """Who may call the admin API, the console and the chat routes (OIDC, API tokens, bootstrap token):
        guard every route with `operators.require(Role.X)`. Available once the service starts (at once when
        they were given to it)."""
        if self._given_operators is not None:
            return self._given_operators
        if self.access is None:
            raise RuntimeError("the service's operators are built when it starts")
        return self.access.operators

    @property
    def url(self) -> str | None:
        """The listener's base URL (`https://` with `listen.tls_cert`), once it listens."""
        if self.address is None:
            return None
        scheme = "http" if self.settings.listen.tls_cert is None else "https"
        host, port = self.address
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def request_reload(self) -> None:
        """Reload the rule files and the listener's certificate (SIGHUP): carried out by the running
        service, each audited as by "signal"."""
        if self.rules is None:
            log.warning(
                "reload asked for before the service started: the rules and certificate being loaded are current"
            )
            return
        self.rules.request()
        if self.certificate is not None:
            self.certificate.request()
        if self.access is not None:
            self.access.reload()  # the API tokens file

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._run(stop)
        finally:
            for hub in self.hubs.values():
                await hub.close()
            if self._owns_provider and self._provider is not None:
                self._provider.shutdown()

    async def _run(self, stop: asyncio.Event) -> None:
        s = self.settings
        rules = load_rules(list(s.rules))
        first_certificate = None
        if s.listen.tls_cert is not None and s.listen.tls_key is not None:
            # Before anything opens: a certificate that cannot serve stops the start (exit 2, the file named).
            first_certificate = load_certificate(s.listen.tls_cert, s.listen.tls_key)
        # Before anything opens too: an unusable API tokens file stops the start, the file named.
        self.access = Access(s, self.clock)
        inventory = load_inventory(s)
        dry_run = s.dry_run
        if inventory is None:
            dry_run = True
            log.warning("no hub inventory (no --inventory and no local lab): DRY-RUN, nothing will be enforced")
        elif dry_run:
            log.warning("dry-run is on: decisions are recorded, nothing is enforced")
        # The WireGuard hubs are also read back (reconciler, monitor, readiness); overlays list their devices.
        wireguard = {n: h for n, h in self.hubs.items() if isinstance(h, SshHub)}
        adapters = {n: h for n, h in self.hubs.items() if isinstance(h, OverlayHub)}
        if inventory is not None and adapters:
            inventory = with_peers(inventory, await discovered_peers(inventory, adapters))
        identity = IdentityMap(inventory)
        journal = await open_journal(s.journal)
        try:
            engine = Engine(rules, identity, max_subjects=s.limits.max_subjects)
            parts = self._assemble(journal, engine, identity, wireguard, dry_run=dry_run, tls=first_certificate)
            await self._start(parts)
            await self._serve(parts, stop)
        finally:
            if self.notifier is not None:
                # What the draining work emitted after the notifier stopped: journaled, sent after a restart.
                with contextlib.suppress(Exception):
                    await self.notifier.flush()
            await journal.close()

    def _assemble(
        self,
        journal: Journal,
        engine: Engine,
        identity: IdentityMap,
        hubs: Mapping[str, SshHub],
        *,
        dry_run: bool,
        tls: Certificate | None = None,
    ) -> _Parts:
        s = self.settings
        monitor = None
        if hubs and s.monitor_interval_s is not None:
            handoff = Waking(
                JournalHandoff(journal, self.instance, max_skew=self._max_clock_skew), self.wake, self.urgent
            )
            monitor = HubMonitor(
                list(hubs.values()), handoff, self.metrics.registry, interval_s=s.monitor_interval_s,
                thresholds=Thresholds(stale_after_s=s.monitor_stale_after_s),
            )  # fmt: skip
        veto = ProtectedTargets(engine.rules.protection, identity)
        self.notifier = notifier_from(
            s.notify, journal, self.instance, clock=self.clock,
            count=lambda channel, outcome: self.metrics.notifications.labels(channel, outcome).inc(),
            devices=lambda key: [p.name for p in identity.subject(key).peers],
        )  # fmt: skip
        executor = Executor(
            journal, self.hubs, self.clock, veto=veto,
            peer_change=monitor.own_changes.note if monitor else _ignore_change, tracer=self.tracer,
            metrics=self.metrics,
        )  # fmt: skip
        radius = BlastRadius(s.limits.actions_per_minute, s.limits.actions_per_minute_per_rule, time.monotonic)
        parsed = ParsedEvents()
        self.lifecycle = Lifecycle(journal, executor, engine, self.clock, self.metrics, notices=self.notifier)
        pipeline = Pipeline(
            journal=journal, engine=engine, executor=executor, radius=radius, clock=self.clock,
            owner=self.instance, metrics=self.metrics, dry_run=dry_run, wake=self.wake, tracer=self.tracer,
            parsed=parsed, max_clock_skew=self._max_clock_skew, lift=self.lifecycle.lift, notices=self.notifier,
            urgent=self.urgent,
        )  # fmt: skip
        self.reconciler = Reconciler(
            journal, executor, self.hubs, self.clock, self.metrics, settings=s.enforcement, notices=self.notifier
        )
        retention = Retention(
            journal, self.clock, self.metrics, horizon_s=lambda: engine.rules.horizon_s,
            margin_s=s.retention.events_margin_s, decisions_days=s.retention.decisions_days,
        )  # fmt: skip
        # The veto follows the rules' protection through a reload.
        self.rules = RuleReloader(
            engine, list(s.rules), journal=journal, metrics=self.metrics, clock=self.clock,
            applied=lambda r: veto.replace(r.protection),
        )  # fmt: skip
        if tls is not None and s.listen.tls_cert is not None and s.listen.tls_key is not None:
            self.certificate = ListenerCertificate(
                s.listen.tls_cert, s.listen.tls_key, tls, journal=journal, metrics=self.metrics, clock=self.clock
            )
        return _Parts(
            journal, engine, executor, pipeline, self.lifecycle, self.reconciler, hubs, radius, dry_run, monitor,
            parsed, retention, self.rules, self.certificate,
        )  # fmt: skip

    async def _start(self, p: _Parts) -> None:
        replayed = await p.pipeline.rebuild(timedelta(seconds=p.engine.rules.horizon_s))
        log.info("rebuilt risk from %d events", replayed)
        if self._own_process:
            settle_heap()

    @staticmethod
    async def _resume(p: _Parts) -> None:
        """What a previous run left unfinished, carried out beside the serving: a hub that is down must not
        hold the webhooks closed (its actions go pending, and the reconciler takes them from there)."""
        try:
            resumed = await p.executor.resume()
            await p.lifecycle.resume()
        except Exception:
            log.exception("resuming unfinished actions failed; the reconciler takes them over")
            return
        log.info("resumed %d unfinished actions", len(resumed))

    @property
    def _max_clock_skew(self) -> timedelta:
        return timedelta(seconds=self.settings.max_clock_skew_s)

    def _app(
        self,
        p: _Parts,
        hooks: Webhooks,
        consumers: Sequence[AlertConsumer] = (),
        pulled: Mapping[str, sources.PullSource] | None = None,
    ) -> web.Application:
        pulled = pulled or {}
        s = self.settings
        app = web.Application(client_max_size=s.listen.max_body_bytes, middlewares=[json_errors])
        app.add_routes(hooks.routes())
        app.on_cleanup.append(lambda _: hooks.close())

        async def ready() -> Mapping[str, bool]:
            checks: dict[str, bool] = {}
            try:
                await p.journal.counts()
                checks["journal"] = await p.journal.writable()
            except Exception:
                checks["journal"] = False
            for name, hub in p.hubs.items():
                checks[f"hub:{name}"] = hub.down_since is None
            checks["enforcing"] = not (p.dry_run or p.radius.tripped)
            if consumers:
                checks["kafka"] = all(c.connected for c in consumers)
            for name, source in pulled.items():
                checks[f"source:{name}"] = source.ready
            return checks

        def subject(key: str) -> dict[str, object]:
            state = p.engine.state(key)
            return {
                "subject": state.subject, "score": round(state.score, 3), "signals": sorted(state.signals),
                "active_response": state.active_response,
            }  # fmt: skip

        # /metrics names every peer's key and traffic: behind the admin token here, unless it has its own listener.
        registry = None if s.metrics.listen else self.metrics.registry
        app.add_routes(
            admin_routes(
                p.journal, p.lifecycle, ready, registry, s.admin_token, subject_state=subject,
                unenforced=p.reconciler.readiness_detail, reload_rules=p.rules.reload,
                sources=(lambda: {n: src.status() for n, src in pulled.items()}) if pulled else None,
                operators=self.operators,
            )
        )  # fmt: skip
        self._chat_routes(app, p)
        self._console_routes(app, p, subject)
        access = self.access
        if access is not None:
            if self._given_operators is None:
                log.info("operators are identified by %s", access.describe())
            app.on_cleanup.append(lambda _: access.close())
        self.app = app
        return app

    def _chat_routes(self, app: web.Application, p: _Parts) -> None:
        """Approvals from chat: Slack's buttons and signed links, each only when configured."""
        s = self.settings
        if s.chat is None:
            return
        people = ChatPeople.parse(s.chat.people)
        if s.chat.slack is not None and s.slack_signing_secret is not None:
            slack = SlackInteractions(
                SlackSignature(s.slack_signing_secret.get_secret_value().encode()), users=s.chat.slack.users,
                people=people, lifecycle=p.lifecycle, journal=p.journal, clock=self.clock,
                team_id=s.chat.slack.team_id, response_url_prefix=s.chat.slack.response_url_prefix,
            )  # fmt: skip
            self.slack = slack
            app.add_routes(slack.routes())
            app.on_cleanup.append(lambda _: slack.close())
        if s.link_key is not None:
            signer = LinkSigner(s.link_key.get_secret_value().encode())
            if s.chat.link_base_url is not None:
                self.links = ApprovalLinks(signer, s.chat.link_base_url, s.chat.link_ttl_s)
                if self.notifier is not None:
                    self.notifier.offer_links(_approval_links(self.links, people, self.clock))
            app.add_routes(
                link_routes(signer, people=people, lifecycle=p.lifecycle, journal=p.journal, clock=self.clock)
            )

    def _console_routes(self, app: web.Application, p: _Parts, subject: Callable[[str], dict[str, object]]) -> None:
        """The console: the same operators, one journal poller for every open timeline."""
        self.console_feed = feed = DecisionFeed(p.journal)
        app.add_routes(
            console_routes(
                p.journal, p.lifecycle, self.operators, feed, hubs=p.hubs, subject_state=subject,
                unenforced=p.reconciler.readiness_detail, policy=lambda: (p.engine.rules, p.engine.identity),
            )
        )  # fmt: skip

        async def end_streams(_: web.Application) -> None:
            feed.close()  # the open timelines end, so the listener stops without waiting for them

        async def poll(_: web.Application) -> AsyncIterator[None]:
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                group.create_task(feed.run(stop), name="console-feed")
                yield
                stop.set()

        app.on_shutdown.append(end_streams)
        app.cleanup_ctx.append(poll)

    async def _serve(self, p: _Parts, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            to_journal: Handoff = Waking(
                JournalHandoff(p.journal, self.instance, p.parsed, max_skew=self._max_clock_skew),
                self.wake,
                self.urgent,
            )
            consumers = []
            handoff = to_journal
            kafka = self.settings.kafka
            if kafka is not None and kafka.ingest_topic:
                # Scale-out: every source publishes to the ingest topic; this instance journals its partitions.
                producer = await stack.enter_async_context(sources.ingest_producer(self.settings))
                handoff = KafkaHandoff(producer, kafka.ingest_topic)

                async def assigned(partitions: set[TopicPartition]) -> None:
                    await self._rebalanced(p, partitions)

                consumers.append(
                    sources.ingest_consumer(self.settings, to_journal, self.metrics, self.tracer, Rebalanced(assigned))
                )
            if (
                alerts := sources.alert_consumer(self.settings, handoff, self.metrics, self.tracer, self.recorder)
            ) is not None:
                consumers.append(alerts)
            self._ingest = consumers[0] if kafka is not None and kafka.ingest_topic else None
            graph = sources.graph_sources(self.settings, p.journal, handoff, self.metrics, self.clock)
            stack.push_async_callback(graph.close)
            await self._listen(p, handoff, consumers, graph, stop)

    async def _rebalanced(self, p: _Parts, assigned: set[TopicPartition]) -> None:
        """New partitions: take over the pending events of their subjects, and rebuild the engine."""
        kafka = self.settings.kafka
        if kafka is None or kafka.ingest_topic is None or self._ingest is None or self._ingest.partitions is None:
            return
        total = len(self._ingest.partitions(kafka.ingest_topic) or ())
        mine = {tp.partition for tp in assigned if tp.topic == kafka.ingest_topic}
        self.partitions_owned = mine
        if total and mine:
            others = await p.journal.pending_of_others(self.instance)
            taken = await p.journal.take_over(
                [s for s, key in others if partition_of(key, total) in mine], self.instance
            )
            log.info("rebalanced: partitions %s of %d; took over %d pending events", sorted(mine), total, taken)
        p.pipeline.request_rebuild(timedelta(seconds=p.engine.rules.horizon_s))

    async def _metrics_listener(self, stack: contextlib.AsyncExitStack, where: MetricsListen) -> tuple[str, int]:
        app = web.Application(middlewares=[json_errors])
        app.add_routes(metrics_routes(self.metrics.registry))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, where.host, where.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        address: tuple[str, int] = sockets[0].getsockname()[:2] if sockets else (where.host, where.port)
        log.info("metrics on %s:%d/metrics (no token: this address is its access control)", *address)
        return address

    def _pull_sources(self, p: _Parts, handoff: Handoff, graph: sources.GraphSources) -> dict[str, sources.PullSource]:
        """The configured pull sources, by name (`okta.system_log`, `entra.subscriptions`, `entra.risk`), each
        run as a task of the service."""
        pulled: dict[str, sources.PullSource] = dict(graph.running)
        okta_log = sources.okta_system_log(self.settings, p.engine.rules, handoff, p.journal, self.metrics)
        if okta_log is not None:
            pulled[OKTA_SYSTEM_LOG] = okta_log
        return pulled

    async def _listen(  # noqa: PLR0915 - one task per part, in one place: the shutdown order reads here
        self,
        p: _Parts,
        handoff: Handoff,
        consumers: list[AlertConsumer],
        graph: sources.GraphSources,
        stop: asyncio.Event,
    ) -> None:
        s = self.settings
        notified = graph.subscriptions.notified if graph.subscriptions is not None else None
        hooks = sources.webhooks(s, handoff, self.metrics, self.tracer, self.recorder, notified=notified)
        pulled = self._pull_sources(p, handoff, graph)
        runner = web.AppRunner(
            self._app(p, hooks, consumers, pulled),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=s.listen.idle_timeout_s,
        )
        await runner.setup()
        intake = asyncio.Event()  # set when intake has stopped; the workers drain after it
        stack = contextlib.AsyncExitStack()
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(AcceptErrors(previous_handler, self.metrics.accept_errors.inc))
        try:
            site = CappedSite(
                runner, s.listen.host, s.listen.port, max_connections=connection_limit(s.listen.max_connections),
                on_refused=self.metrics.connections_refused.inc,
                tls=p.certificate.context if p.certificate is not None else None,
                handshake_timeout_s=s.listen.idle_timeout_s,
            )  # fmt: skip
            await site.start()
            self.metrics.connections_open.set_function(lambda: site.cap.open)
            self.address = site.address
            routes = ", ".join(sorted({r.path for r in hooks.routes()})) or "none (no source is configured)"
            log.info("listening on %s; webhook routes: %s", self.url, routes)
            if p.certificate is not None:
                log.info("serving TLS with %s", p.certificate.current.describe())
            elif not only_this_host(s.listen.host):
                log.warning(
                    "webhooks are served in clear on %s: Okta and Microsoft Graph deliver only to https://, so "
                    "a reverse proxy must terminate TLS in front of it, or set listen.tls_cert and listen.tls_key",
                    s.listen.host,
                )  # fmt: skip
            if s.metrics.listen is not None:
                self.metrics_address = await self._metrics_listener(stack, s.metrics.listen)
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(c.keep_running(), name="kafka") for c in consumers]
                # Pull sources stop with intake, like Kafka: what they read is journaled before they save. After
                # the listener: creating a Graph subscription makes Graph call the notification URL first.
                workers += [group.create_task(src.run(), name=name) for name, src in pulled.items()]
                group.create_task(self._resume(p), name="resume")
                group.create_task(p.pipeline.run(intake), name="pipeline")
                group.create_task(p.lifecycle.run(intake), name="lifecycle")
                group.create_task(p.rules.run(intake), name="rules-reload")
                if p.certificate is not None:
                    group.create_task(p.certificate.run(intake), name="certificate-reload")
                if self.hubs and not p.dry_run:
                    group.create_task(p.reconciler.run(intake, s.reconcile_interval_s), name="reconciler")
                if p.monitor is not None:
                    group.create_task(p.monitor.run(intake), name="hub-monitor")
                if s.retention.interval_s is not None:
                    group.create_task(p.retention.run(intake, s.retention.interval_s), name="retention")
                if self.notifier is not None:
                    # Apart from enforcement: it only ever calls `emit`, which queues in memory.
                    group.create_task(self.notifier.run(intake), name="notifier")
                self.started.set()
                await stop.wait()
                log.info("stopping: intake first, then in-flight work")
                await runner.cleanup()
                for task in workers:
                    task.cancel()
                intake.set()
        finally:
            await runner.cleanup()
            await stack.aclose()
            loop.set_exception_handler(previous_handler)


@dataclass(frozen=True)
class _Parts:
    journal: Journal
    engine: Engine
    executor: Executor
    pipeline: Pipeline
    lifecycle: Lifecycle
    reconciler: Reconciler
    hubs: Mapping[str, SshHub]
    radius: BlastRadius
    dry_run: bool
    monitor: HubMonitor | None
    parsed: ParsedEvents
    retention: Retention
    rules: RuleReloader
    certificate: ListenerCertificate | None


def _approval_links(links: ApprovalLinks, people: ChatPeople, clock: Clock) -> Callable[[str], list[tuple[str, str]]]:
    """For each approver in `chat.people`, a signed Approve and a Reject link of their own: a link acts as
    the person it names, so a message to a group carries one per person."""

    def made(decision_id: str) -> list[tuple[str, str]]:
        now = clock().timestamp()
        return [
            (f"{verb.capitalize()} as {operator}", links.url(decision_id, verb, operator, now=now))
            for operator, role in sorted(people.roles.items())
            if role >= Role.APPROVER
            for verb in ("approve", "reject")
        ]

    return made


def _ignore_change(_hub: str, _key: str) -> None:
    return None


def settle_heap() -> None:
    """Take what was loaded at start (modules, rules, the rebuilt risk) out of the cycle collector's
    scans, and let young objects die by reference count before it looks at them. A SIEM burst makes
    millions of short-lived containers; with the defaults, the full scans of everything that lives long
    cost several microseconds per alert (measured: 11 → 4 µs to make one delivery's records). Garbage
    without cycles is freed as always; cycles still are, only less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
