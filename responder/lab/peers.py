"""Extra WireGuard peers on the lab's hubs: many people to act on, beside the lab's own admin and app nodes.

Each is a real peer (a generated key, a /32 of its hub's tunnel network) and a real element of an nft
set, enrolled as an operator would: in the running hub and in the hub's wg0.conf and ruleset file, so
a rebooted hub brings them back. There is no device behind them; packets are proven with the lab's nodes.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from responder.lab.lab import Lab, LabError
from responder.lab.ruleset import AGENT_ELEMENTS_INCLUDE

EXTRA_PER_HUB = 220  # host addresses .30 to .249 of each hub's /24; the lab's own nodes sit below .30


def extra_peers(
    hubs: int,
    count: int,
    *,
    name: str = "bench",
    domain: str = "bench.example",
    first: int = 0,
    set_name: str = "admin_devices",
) -> list[dict[str, Any]]:
    """`count` peers spread over `hubs` hubs in turn (peer n on hub 1 + n % hubs), each owned by its own
    person (`user<n>@<domain>`), as inventory entries. `first` numbers them on from an earlier call, so
    several groups do not share addresses."""
    peers = []
    for n in range(first, first + count):
        if n // hubs >= EXTRA_PER_HUB:
            raise LabError(f"each hub's /24 holds {EXTRA_PER_HUB} extra peers")
        peers.append({
            "name": f"{name}{n}", "hub": f"hub{1 + n % hubs}", "public_key": base64.b64encode(os.urandom(32)).decode(),
            "tunnel_ip": f"10.100.{n % hubs}.{30 + n // hubs}", "sets": [set_name], "owner": f"user{n}@{domain}",
        })  # fmt: skip
    return peers


async def enroll(lab: Lab, peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put the peers on their hubs (WireGuard peer and set element) and into each hub's wg0.conf and ruleset.
    Returns them."""
    for hub in sorted({str(p["hub"]) for p in peers}):
        mine = [p for p in peers if p["hub"] == hub]
        argv = ["wg", "set", "wg0"]
        for p in mine:
            argv += ["peer", str(p["public_key"]), "allowed-ips", f"{p['tunnel_ip']}/32"]
        await lab.exec(hub, *argv, check=True)
        added = ""
        for set_name in sorted({s for p in mine for s in p["sets"]}):
            elements = ", ".join(str(p["tunnel_ip"]) for p in mine if set_name in p["sets"])
            added += f"add element inet zerotrust {set_name} {{ {elements} }}\n"
        await lab.exec(hub, "nft", "-f", "-", stdin=added, check=True)
        await lab.save_boot_config(hub, {str(p["public_key"]): str(p["name"]) for p in mine})
        # Before the hub agent's include, which must come last (what it deleted stays deleted).
        ruleset = lab.ruleset_file(hub)
        ruleset.write_text(ruleset.read_text().replace(AGENT_ELEMENTS_INCLUDE, added + AGENT_ELEMENTS_INCLUDE))
    return peers


def inventory_with(lab: Lab, peers: Sequence[Mapping[str, Any]], *, keep_lab_peers: bool = True) -> str:
    """The lab's inventory (as YAML) with `peers` added, or instead of the lab's own when not `keep_lab_peers`."""
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    inventory["peers"] = [*(inventory["peers"] if keep_lab_peers else []), *map(dict, peers)]
    return str(yaml.safe_dump(inventory))


__all__ = ["EXTRA_PER_HUB", "enroll", "extra_peers", "inventory_with"]
