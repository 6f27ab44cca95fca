"""`responder hubs check`: the inventory against the live hubs, one line per problem."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from responder.enrollment.core import AgentRelease
from responder.inventory import HubMode, HubSpec, Inventory, PeerSpec
from responder.pep import SshHub
from responder.pep.errors import HostKeyMismatch, HubError, HubRefused, HubUnreachable
from responder.pep.transport import TransportSettings


async def check_hub(spec: HubSpec, inventory_peers: Sequence[PeerSpec] | None, agent: AgentRelease) -> list[str]:
    """One line per problem of a hub against the inventory (none: all is well). `inventory_peers`: the
    inventory's peers of this hub (None: do not compare peers or sets)."""
    hub = SshHub(spec, TransportSettings(retries=0, connect_timeout=5.0, operation_timeout=10.0))
    problems: list[str] = []
    try:
        if spec.mode is HubMode.AGENT or spec.sudo:
            hello = await hub.call("hello", {})
            found = (hello.get("release", f"unknown (protocol {hello.get('version')})"), hello.get("sha256", ""))
            if found != (agent.version, agent.sha256):
                problems.append(
                    f"{spec.name}: agent version: expected {agent.version} sha256 {agent.sha256[:16]}, "
                    f"found {found[0]} sha256 {found[1][:16] or '?'}"
                )
        live = {p["key"] for p in (await hub.call("peers", {"interface": spec.interface}))["peers"]}
        if inventory_peers is not None:
            listed = {str(p.public_key): p.name for p in inventory_peers}
            for key, name in sorted(listed.items(), key=lambda kv: kv[1]):
                if key not in live:
                    problems.append(f"{spec.name}: peer {name} ({key}) is in the inventory but not on the hub")
            for key in sorted(live - set(listed)):
                problems.append(f"{spec.name}: peer {key} is on the hub but not in the inventory")
            for name in sorted({s for p in inventory_peers for s in p.sets}):
                try:
                    await hub.call("list_set", {"table": spec.table, "set": name})
                except HubRefused:
                    problems.append(
                        f"{spec.name}: set {spec.table} {name} named in the inventory is missing on the hub"
                    )
    except HostKeyMismatch as exc:
        problems.append(f"{spec.name}: host key mismatch: {str(exc).removeprefix(f'hub {spec.name}: ')}")
    except HubUnreachable as exc:
        problems.append(f"{spec.name}: unreachable: {str(exc).removeprefix(f'hub {spec.name}: ')}")
    except HubError as exc:
        problems.append(f"{spec.name}: {str(exc).removeprefix(f'hub {spec.name}: ')}")
    finally:
        await hub.close()
    return problems


async def check(inventory: Inventory, agent: AgentRelease) -> list[tuple[str, list[str]]]:
    """Every hub of the inventory checked at once: (hub, problems) in inventory order."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(check_hub(h, inventory.peers_on(h.name), agent)) for h in inventory.hubs]
    return [(h.name, t.result()) for h, t in zip(inventory.hubs, tasks, strict=True)]
