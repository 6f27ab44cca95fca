"""`responder hubs`: what the enforcement points look like right now."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer

from responder.cli.common import ConfigOption, InventoryOption, JsonOption, inventory
from responder.inventory import Inventory

STALE_AFTER_S = 300  # as the seed's check script (responder.pep.hub.STALE_AFTER_S)

app = typer.Typer(help="Inspect the hubs of the inventory.", no_args_is_help=True)


async def _statuses(inv: Inventory) -> list[dict[str, Any]]:
    from responder.pep import SshHub  # noqa: PLC0415 - the SSH stack loads only when needed

    hubs = [SshHub(spec) for spec in inv.hubs]
    try:
        return list(await asyncio.gather(*(h.status() for h in hubs)))
    finally:
        for h in hubs:
            await h.close()


def _render(inv: Inventory, status: dict[str, Any]) -> list[str]:
    if not status["reachable"]:
        return [f"{status['hub']}: UNREACHABLE — {status['error']}"]
    names = {str(p.public_key): p.name for p in inv.peers_on(status["hub"])}
    sets = ", ".join(f"{k} {'?' if v is None else v}" for k, v in status["sets"].items())
    lines = [f"{status['hub']}: reachable ({status['mode']}, {status['latency_ms']} ms); sets: {sets}"]
    for p in status["peers"]:
        age = "never" if p["handshake_age_s"] is None else f"{p['handshake_age_s']}s ago"
        stale = f"  STALE (>{STALE_AFTER_S}s)" if p["stale"] else ""
        name = names.get(p["key"], "(not in inventory)")
        lines.append(
            f"  {name:<20} {p['key']}  {','.join(p['allowed_ips'])}  handshake {age}  rx {p['rx']} tx {p['tx']}{stale}"
        )
    return lines


@app.command()
def status(config: ConfigOption = None, inventory_path: InventoryOption = None, as_json: JsonOption = False) -> None:
    """Reachability, peers with handshake age (stale after 300 s with keepalive on), and set sizes.
    Exit 1 if a hub is unreachable."""
    inv = inventory(config, inventory_path)
    statuses = asyncio.run(_statuses(inv))
    if as_json:
        typer.echo(json.dumps(statuses, indent=2))
    else:
        for s in statuses:
            typer.echo("\n".join(_render(inv, s)))
    if not all(s["reachable"] for s in statuses):
        raise typer.Exit(1)
