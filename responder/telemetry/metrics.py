"""The service's Prometheus metrics, on a registry the service owns (no process-global state)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER = "other"


def bounded(value: str | None, known: Collection[str]) -> str:
    """`value` as a label value if it is one of `known`, else `other`: every label value a sender can
    choose must come from a closed set, or each made-up value becomes a new time series for as long as
    the process runs (a few hundred crafted Graph notifications made /metrics half a megabyte)."""
    return value if value is not None and value in known else OTHER


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.deliveries = Counter(
            "responder_deliveries", "Deliveries received, by source and outcome", ["source", "outcome"], registry=r
        )
        self.tls_certificate_reloads = Counter(
            "responder_tls_certificate_reloads", "Listener certificate reloads (SIGHUP), by outcome: applied, refused",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.tls_certificate_expiry = Gauge(
            "responder_tls_certificate_expiry_timestamp_seconds",
            "When the listener certificate being served expires (Unix time); 0 without listen.tls_cert",
            registry=r,
        )
        self.events = Counter("responder_events", "Canonical events accepted, by source", ["source"], registry=r)
        self.rules_reloads = Counter(
            "responder_rules_reloads", "Rule reloads (SIGHUP or the admin API), by outcome: applied or refused",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "responder_duplicate_events", "Events already accepted before, by source", ["source"], registry=r
        )
        self.quarantined = Counter(
            "responder_quarantined_events",
            "Stored events set aside because they do not load (see the audit trail, kind event.quarantined)",
            registry=r,
        )
        self.dead_letters = Counter(
            "responder_dead_letters", "Kafka messages sent to the dead-letter topic, by topic", ["topic"], registry=r
        )
        self.kafka_lag = Gauge(
            "responder_kafka_lag", "Messages behind the end of each partition", ["topic", "partition"], registry=r
        )
        self.lifecycle = Counter(
            "responder_graph_lifecycle_notifications",
            "Microsoft Graph lifecycle notifications, by event (subscriptionRemoved means blind)",
            ["event"],
            registry=r,
        )
        self.decisions = Counter(
            "responder_decisions",
            "Decisions, by response and the state they started in",
            ["response", "state"],
            registry=r,
        )
        self.actions = Counter(
            "responder_actions",
            "Actions carried out, by type, outcome and verification",
            ["type", "outcome", "verified"],
            registry=r,
        )
        self.drift = Counter(
            "responder_drift",
            "Enforced state found undone on a hub and re-asserted, by hub and action",
            ["hub", "action"],
            registry=r,
        )
        self.active_decisions = Gauge("responder_active_decisions", "Decisions in force", registry=r)
        self.tracked_subjects = Gauge(
            "responder_tracked_subjects", "Subjects the decision engine holds risk or a response for", registry=r
        )
        self.subjects_refused = Counter(
            "responder_subjects_refused",
            "Signals on new subjects not tracked: the engine was at limits.max_subjects",
            registry=r,
        )
        self.pruned = Counter(
            "responder_journal_pruned_rows", "Journal rows deleted by retention, by table", ["table"], registry=r
        )
        self.enforcement_off = Gauge(
            "responder_enforcement_off", "1 while the blast-radius breaker holds the service in dry-run", registry=r
        )
        self.containment_seconds = Histogram(
            "responder_containment_seconds",
            "From a delivery's arrival to every action of its decision verified on the hubs",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
            registry=r,
        )
        self.unenforced = Gauge(
            "responder_unenforced_actions",
            "Actions in force (and undos) whose effect the hub has not verified yet, by hub",
            ["hub"],
            registry=r,
        )
        self.unenforced_oldest = Gauge(
            "responder_unenforced_oldest_seconds",
            "How long the oldest of them has been outstanding, by hub (0 when none is)",
            ["hub"],
            registry=r,
        )
        self.hub_down = Gauge("responder_hub_down", "1 while a hub does not answer", ["hub"], registry=r)
        self.convergence_tries = Counter(
            "responder_convergence_tries",
            "Tries at bringing a hub to what is in force, by hub and outcome"
            " (converged, outstanding, unreadable, not answering)",
            ["hub", "outcome"],
            registry=r,
        )
        self.hub_seconds = Histogram(
            "responder_hub_operation_seconds",
            "Time of one verified operation on a hub, by hub",
            ["hub"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=r,
        )
        self.breaker_open = Gauge(
            "responder_hub_breaker_open", "1 while a hub's circuit breaker is open", ["hub"], registry=r
        )
        self.connections_open = Gauge("responder_connections_open", "HTTP connections open now", registry=r)
        self.connections_refused = Counter(
            "responder_connections_refused",
            "HTTP connections answered 503 and closed at once because listen.max_connections were open",
            registry=r,
        )
        self.accept_errors = Counter(
            "responder_accept_errors",
            "HTTP connections the listener failed to accept (out of open files, buffers or memory)",
            registry=r,
        )
        self.handoff_seconds = Histogram(
            "responder_handoff_seconds",
            "Time to hand a delivery off durably",
            ["source"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        # Pull sources (okta.system_log, entra.subscriptions, entra.risk): how far behind, how polls end.
        self.source_lag = Gauge(
            "responder_source_lag_seconds",
            "Now minus the newest event a pull source read, or its last poll that caught up",
            ["source"],
            registry=r,
        )
        self.source_polls = Counter(
            "responder_source_polls", "Polls of a pull source, by outcome (ok, error, rate_limited)",
            ["source", "outcome"], registry=r,
        )  # fmt: skip
        self.source_errors = Counter(
            "responder_source_errors", "Errors of a pull source, by kind", ["source", "kind"], registry=r
        )
        # Channels are the configured names (a closed set); outcomes: sent, retried, failed, deduplicated,
        # rate_limited (a wait, not a loss), dropped (the in-memory queue was full).
        self.notifications = Counter(
            "responder_notifications", "Notification messages, by channel and outcome", ["channel", "outcome"],
            registry=r,
        )  # fmt: skip
