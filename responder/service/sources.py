"""Building the sources from the settings: the webhook routes, the Kafka consumer and the pull sources."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from aiokafka import AIOKafkaProducer
from opentelemetry.trace import Tracer

from responder.config import Kafka, Settings
from responder.core.rules import RuleSet
from responder.ingest import ssf
from responder.ingest.entra import ChangeNotification
from responder.ingest.entra_risk import RiskPoller, RiskPolling
from responder.ingest.graph_client import AppCredentials, ClientCertificate, GraphClient
from responder.ingest.graph_subscriptions import GraphSubscriptions, SubscriptionSettings
from responder.ingest.handoff import Handoff
from responder.ingest.kafka import AlertConsumer, ConsumerConfig
from responder.ingest.okta_auth import ApiToken, OktaCredentials, ServiceApp
from responder.ingest.okta_logs import SystemLogConfig, SystemLogPoller, event_types_read
from responder.ingest.scaleout import CanonicalFormat, Rebalanced
from responder.ingest.siem import formats_for, load_connectors
from responder.ingest.webhooks import DeliveryRecorder, SsfReceiver, WebhookConfig, Webhooks
from responder.journal import Journal
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


def webhooks(
    settings: Settings,
    handoff: Handoff,
    metrics: Metrics,
    tracer: Tracer | None = None,
    recorder: DeliveryRecorder | None = None,
    *,
    notified: Callable[[Sequence[ChangeNotification]], None] | None = None,
) -> Webhooks:
    receiver = None
    if settings.ssf is not None:
        keys = ssf.Keys(
            jwks_file=settings.ssf.jwks_file, jwks_url=settings.ssf.jwks_url,
            refetch_interval_s=settings.ssf.jwks_refetch_interval_s, timeout_s=settings.ssf.jwks_timeout_s,
        )  # fmt: skip
        receiver = SsfReceiver(keys, settings.ssf.issuer, settings.ssf.audience, settings.ssf_authorization)
    config = WebhookConfig(
        okta_secret=settings.okta_secret,
        entra_client_state=settings.entra_client_state,
        ssf=receiver,
        max_body_bytes=settings.listen.max_body_bytes,
        body_timeout_s=settings.listen.body_timeout_s,
        ssf_path=settings.ssf.path if settings.ssf else "/hooks/ssf",
    )
    return Webhooks(config, handoff, metrics, tracer, recorder, notified=notified)


class KafkaTLSError(ValueError):
    """The Kafka TLS files cannot be used: which file, and why."""


def kafka_ssl_context(kafka: Kafka) -> ssl.SSLContext:
    """The stdlib's verifying client context: the CA is always checked (there is no setting that turns that
    off); the broker's name too unless `ssl_check_hostname` is false; a client certificate where given."""
    try:
        context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaTLSError(f"kafka.ssl_cafile {kafka.ssl_cafile}: {_reason(exc)}") from None
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile is not None and kafka.ssl_keyfile is not None:
        try:
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaTLSError(
                f"kafka.ssl_certfile {kafka.ssl_certfile} / ssl_keyfile {kafka.ssl_keyfile}: {_reason(exc)}"
            ) from None
    return context


def _reason(exc: OSError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


def client_options(settings: Settings) -> dict[str, object]:
    """The TLS and SASL options every Kafka client of the service is made with (and `config check`'s)."""
    kafka = settings.kafka
    assert kafka is not None  # noqa: S101 - only called with Kafka configured
    options: dict[str, object] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = kafka_ssl_context(kafka)
    if kafka.sasl_mechanism:
        options |= {"sasl_mechanism": kafka.sasl_mechanism, "sasl_plain_username": kafka.sasl_username}
        if settings.kafka_password is not None:
            options["sasl_plain_password"] = settings.kafka_password.get_secret_value()
    return options


def alert_consumer(
    settings: Settings,
    handoff: Handoff,
    metrics: Metrics,
    tracer: Tracer | None = None,
    recorder: DeliveryRecorder | None = None,
) -> AlertConsumer | None:
    kafka = settings.kafka
    if kafka is None or not kafka.topics:
        return None
    formats = formats_for({t.name: t.format for t in kafka.topics}, load_connectors(settings.connectors))
    config = ConsumerConfig(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.group_id,
        topics=formats,
        dead_letter_topic=kafka.dead_letter_topic,
        max_in_flight=kafka.max_in_flight,
        client_options=client_options(settings),
        parse_workers=kafka.parse_workers,
    )
    return AlertConsumer(config, handoff, metrics, tracer, recorder)


@contextlib.asynccontextmanager
async def ingest_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    kafka = settings.kafka
    assert kafka is not None  # noqa: S101 - only called with Kafka configured
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", request_timeout_ms=15000, **client_options(settings)
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def ingest_consumer(
    settings: Settings, handoff: Handoff, metrics: Metrics, tracer: Tracer | None, listener: Rebalanced
) -> AlertConsumer:
    kafka = settings.kafka
    assert kafka is not None and kafka.ingest_topic is not None  # noqa: S101 - only called in scale-out mode
    config = ConsumerConfig(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"{kafka.group_id}.ingest",
        topics={kafka.ingest_topic: CanonicalFormat()},
        dead_letter_topic=kafka.dead_letter_topic,
        max_in_flight=kafka.max_in_flight,
        client_options=client_options(settings),
        listener=listener,
    )
    return AlertConsumer(config, handoff, metrics, tracer)


def okta_system_log(
    settings: Settings, rules: RuleSet, handoff: Handoff, journal: Journal, metrics: Metrics
) -> SystemLogPoller | None:
    """The System Log poller, reading the event types the loaded rules match for Okta and those configured
    (fixed at start: a rule reload that reads new types takes effect at the next restart)."""
    config = settings.okta.system_log if settings.okta is not None else None
    if config is None:
        return None
    credentials: OktaCredentials
    if config.client_id is not None and settings.okta_private_key is not None:
        credentials = ServiceApp(
            config.org_url, config.client_id, settings.okta_private_key, key_id=config.key_id,
            timeout_s=config.request_timeout_s,
        )  # fmt: skip
    else:
        assert settings.okta_api_token is not None  # noqa: S101 - the settings refuse a poller without either
        credentials = ApiToken(settings.okta_api_token)
    types = event_types_read(rules, config.event_types)
    if not types:
        log.error("okta.system_log: no rule reads Okta events and no event_types are set: nothing to poll")
        return None
    start = None if config.start == "now" else config.start
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return SystemLogPoller(
        SystemLogConfig(
            org_url=config.org_url, credentials=credentials, event_types=types,
            interval_s=config.interval_s, start=start, page_limit=config.page_limit,
            max_pages_per_poll=config.max_pages_per_poll, request_timeout_s=config.request_timeout_s,
        ),
        handoff, journal, metrics,
    )  # fmt: skip


class PullSource(Protocol):
    """A source the service polls from (its task runs until cancelled) and reports in /readyz."""

    @property
    def ready(self) -> bool: ...

    def status(self) -> dict[str, object]: ...

    async def run(self) -> None: ...


@dataclass
class GraphSources:
    """The Graph pull sources configured (`entra.subscriptions`, `entra.risk_polling`) and their client."""

    client: GraphClient | None = None
    subscriptions: GraphSubscriptions | None = None
    risk: RiskPoller | None = None
    running: dict[str, PullSource] = field(default_factory=dict)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def graph_sources(
    settings: Settings, journal: Journal, handoff: Handoff, metrics: Metrics, now: Callable[[], datetime]
) -> GraphSources:
    entra = settings.entra
    if entra is None or (entra.subscriptions is None and entra.risk_polling is None):
        return GraphSources()
    certificate = None
    if entra.client_certificate is not None and entra.client_key is not None:
        certificate = ClientCertificate.load(entra.client_certificate.read_bytes(), entra.client_key.read_bytes())
    client = GraphClient(
        AppCredentials(entra.tenant_id, entra.client_id, settings.entra_client_secret, certificate),
        graph_url=entra.graph_url, login_url=entra.login_url, timeout_s=entra.timeout_s, now=now,
    )  # fmt: skip
    out = GraphSources(client)
    if (subs := entra.subscriptions) is not None:
        assert settings.entra_client_state is not None  # noqa: S101 - the settings require it with subscriptions
        keeper = SubscriptionSettings(
            notification_url=subs.notification_url, lifecycle_notification_url=subs.lifecycle_notification_url,
            client_state=settings.entra_client_state, resources=subs.resources,
            lifetime_minutes=subs.lifetime_minutes, renew_below=subs.renew_below,
            check_interval_s=subs.check_interval_s,
        )  # fmt: skip
        out.subscriptions = GraphSubscriptions(client, journal, handoff, metrics, settings=keeper, now=now)
        out.running["entra.subscriptions"] = out.subscriptions
    if (risk := entra.risk_polling) is not None:
        polling = RiskPolling(
            interval_s=risk.interval_s, first_lookback_s=risk.first_lookback_s, overlap_s=risk.overlap_s
        )
        out.risk = RiskPoller(client, journal, handoff, metrics, settings=polling, now=now)
        out.running["entra.risk"] = out.risk
    return out
