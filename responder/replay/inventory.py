"""An inventory in the lab's shape without a lab: for dry-run replays, so identities resolve to the same
peers (admin1 is alice@example.com's, app1 svc-app@example.com's) and actions read the same."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from responder.core.identifiers import WireGuardKey
from responder.inventory import HubMode, HubSpec, Inventory, PeerSpec, SshEndpoint
from responder.lab.topology import MANAGEMENT_ADDRESS, Role, Topology, tunnel_network

# A syntactically valid host key: a dry run never connects.
_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDr5iJNxMl7v9Uu6Bvr5OcG+36ATej1NqQK1BGHEJ7YU replay"


def _key(name: str) -> WireGuardKey:
    private = X25519PrivateKey.from_private_bytes(hashlib.sha256(f"replay:{name}".encode()).digest())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return WireGuardKey(base64.b64encode(public).decode())


def lab_shaped_inventory(hubs: int = 1) -> Inventory:
    topo = Topology("replay", hubs)
    hub_specs, peers = [], []
    for node in topo.nodes:
        if node.role is Role.HUB:
            hub_specs.append(
                HubSpec(
                    name=node.name,
                    ssh=SshEndpoint(
                        host=str(node.underlay), user="root", host_key=_HOST_KEY, client_key=Path("/dev/null")
                    ),
                    mode=HubMode.AGENT,
                    tunnel_network=tunnel_network(node.index),
                    address=node.tunnel,
                )
            )
        elif node.role in {Role.ADMIN, Role.APP}:
            peers.append(
                PeerSpec(
                    name=node.name,
                    hub=topo.hub_of(node).name,
                    public_key=_key(node.name),
                    tunnel_ip=node.tunnel,
                    sets=node.sets,
                    owner=node.owner,
                    device=node.name,
                )
            )
    return Inventory(hubs=tuple(hub_specs), peers=tuple(peers), management_addresses=(MANAGEMENT_ADDRESS,))
