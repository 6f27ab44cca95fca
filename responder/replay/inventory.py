"""An inventory in the lab's shape without a lab: for dry-run replays, so identities resolve to the same
peers (admin1 is alice@example.com's, app1 svc-app@example.com's) and actions read the same."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from responder.core.identifiers import WireGuardKey
from responder.inventory import Inventory
from responder.lab.inventory import topology_inventory
from responder.lab.topology import Role, Topology

# A syntactically valid host key: a dry run never connects.
_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDr5iJNxMl7v9Uu6Bvr5OcG+36ATej1NqQK1BGHEJ7YU replay"


def _key(name: str) -> WireGuardKey:
    private = X25519PrivateKey.from_private_bytes(hashlib.sha256(f"replay:{name}".encode()).digest())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return WireGuardKey(base64.b64encode(public).decode())


def lab_shaped_inventory(hubs: int = 1) -> Inventory:
    topology = Topology("replay", hubs)
    return topology_inventory(
        topology,
        public_keys={n.name: _key(n.name) for n in topology.nodes if n.role is not Role.SOC},
        host_key=lambda _: _HOST_KEY,
        client_key=Path("/dev/null"),
    )
