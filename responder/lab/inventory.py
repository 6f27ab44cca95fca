"""The inventory a topology describes: its hubs (reached over SSH from the management node, in agent mode)
and its peers (key, tunnel address, sets, owner), as the responder reads them.

Pure: the lab passes the keys it generated and the host keys its sshds made; a dry-run replay passes
derived keys for a lab that was never built, so both read the same hubs, peers and owners.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from responder.core.identifiers import WireGuardKey
from responder.inventory import HubMode, HubSpec, Inventory, PeerSpec, SshEndpoint
from responder.lab.topology import MANAGEMENT_ADDRESS, Role, Topology, tunnel_network


def topology_inventory(
    topology: Topology,
    *,
    public_keys: Mapping[str, WireGuardKey],
    host_key: Callable[[str], str],
    client_key: Path,
    netns: Path | None = None,
) -> Inventory:
    """Every hub of `topology` with its pinned `host_key(name)`, reached as root with `client_key` (from
    `netns`, the management node's namespace, when given); every admin and app node as a peer with its
    `public_keys[name]`."""
    hubs, peers = [], []
    for node in topology.nodes:
        if node.role is Role.HUB:
            hubs.append(
                HubSpec(
                    name=node.name,
                    ssh=SshEndpoint(
                        host=str(node.underlay),
                        user="root",
                        host_key=host_key(node.name),
                        client_key=client_key,
                        netns=netns,
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
                    hub=topology.hub_of(node).name,
                    public_key=public_keys[node.name],
                    tunnel_ip=node.tunnel,
                    sets=node.sets,
                    owner=node.owner,
                    device=node.name,
                )
            )
    return Inventory(hubs=tuple(hubs), peers=tuple(peers), management_addresses=(MANAGEMENT_ADDRESS,))
