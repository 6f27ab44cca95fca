"""The service's configuration for one replay run: a journal in the run's own directory, secrets of its
own, the inventory the mode calls for, and for the case's sources an SSF transmitter (its JWKS is the
receiver's) and Kafka topics with a consumer group of their own."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from responder.config import Kafka, KafkaTopic, Listen, Settings, Ssf
from responder.inventory import Inventory
from responder.replay.case import Case
from responder.replay.inventory import lab_shaped_inventory
from responder.replay.options import Options, ReplayError
from responder.replay.transmitter import Transmitter


@dataclass(frozen=True, slots=True)
class Secrets:
    """What the run's senders and its admin client must present; new for every run."""

    okta: str
    client_state: str
    admin_token: str

    @classmethod
    def fresh(cls) -> Secrets:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(24))


@dataclass(frozen=True, slots=True)
class Setup:
    """Everything built before the service starts: its settings and what the run needs to talk to it."""

    settings: Settings
    secrets: Secrets
    inventory: Inventory
    journal: Path  # the SQLite file the service journals into
    transmitter: Transmitter | None = None  # when the case has ssf deliveries
    topics: Mapping[str, str] = field(default_factory=dict)  # kafka format -> the run's topic

    @property
    def peer_names(self) -> dict[str, str]:
        """Peer names by public key: actions read as rule tests spell them."""
        return {str(p.public_key): p.name for p in self.inventory.peers}


async def prepare(case: Case, options: Options, directory: Path, run_id: str) -> Setup:
    """The run's setup in `directory` (the journal, an inventory or JWKS written there); Kafka topics are
    created on the broker now."""
    spec = case.spec
    run_secrets = Secrets.fresh()
    inventory_path = _inventory_path(case, options, directory)
    inventory = Inventory.load(inventory_path)
    rules = tuple(case.resolve(p) for p in spec.rules) if spec.rules else options.rules
    transmitter, ssf = _ssf(case, directory)
    topics, kafka = await _kafka(case, options, run_id)
    journal = directory / "journal.db"
    settings = Settings(
        listen=Listen(host="127.0.0.1", port=0),
        journal=f"sqlite:///{journal}",
        inventory=inventory_path,
        rules=rules,
        connectors=options.connectors,
        okta_secret=run_secrets.okta,
        entra_client_state=run_secrets.client_state,
        admin_token=run_secrets.admin_token,
        ssf=ssf,
        kafka=kafka,
        dry_run=options.mode == "dry-run",
        monitor_interval_s=None,  # its events would depend on the lab's history
        reconcile_interval_s=5.0,
    )
    return Setup(settings, run_secrets, inventory, journal, transmitter, topics)


def _inventory_path(case: Case, options: Options, directory: Path) -> Path:
    spec = case.spec
    lab = options.enforcing_lab
    if lab is not None:
        if lab.topology.hubs < spec.lab.hubs:
            raise ReplayError(f"the case needs a lab with {spec.lab.hubs} hubs; this one has {lab.topology.hubs}")
        # An inventory given with a lab adds to it (overlays beside the lab's hubs, say).
        return options.inventory or lab.inventory_path
    if options.inventory is not None:
        return options.inventory
    if spec.lab.inventory is not None:
        return case.resolve(spec.lab.inventory)
    if options.lab is not None:
        return options.lab.inventory_path
    path = directory / "inventory.yaml"
    path.write_text(lab_shaped_inventory(spec.lab.hubs).to_yaml(), encoding="utf-8")
    return path


def _ssf(case: Case, directory: Path) -> tuple[Transmitter | None, Ssf | None]:
    ssf = [d for d in case.spec.deliveries if d.via == "ssf"]
    if not ssf:
        return None, None
    transmitter = Transmitter()
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps(transmitter.jwks()), encoding="utf-8")
    claims = case.body_json(ssf[0])
    given = case.spec.ssf
    issuer = given.issuer or (claims.get("iss") if isinstance(claims, dict) else None)
    audience = given.audience or (claims.get("aud") if isinstance(claims, dict) else None)
    if isinstance(audience, list):
        audience = audience[0] if audience else None
    if not isinstance(issuer, str) or not isinstance(audience, str):
        raise ReplayError("ssf: set ssf.issuer and ssf.audience, or give iss and aud in the first SET")
    return transmitter, Ssf(issuer=issuer, audience=audience, jwks_file=jwks)


async def _kafka(case: Case, options: Options, run_id: str) -> tuple[dict[str, str], Kafka | None]:
    formats = sorted({f for d in case.spec.deliveries if (f := d.kafka_format)})
    if not formats:
        return {}, None
    bootstrap = options.kafka
    if bootstrap is None:
        raise ReplayError("this case has kafka deliveries: a broker is needed (--kafka BOOTSTRAP)")
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415 - only with kafka

    topics = {f: f"replay-{run_id}-{f}" for f in formats}
    dead = f"replay-{run_id}-dead"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in [*topics.values(), dead]])
    finally:
        await admin.close()
    kafka = Kafka(
        bootstrap_servers=bootstrap,
        group_id=f"replay-{run_id}",
        topics=tuple(KafkaTopic(name=t, format=f) for f, t in topics.items()),
        dead_letter_topic=dead,
    )
    return topics, kafka
