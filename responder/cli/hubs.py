"""`responder hubs`: what the enforcement points look like right now."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from responder.cli.common import ConfigOption, InventoryOption, JsonOption, fail, inventory, settings
from responder.config import DEFAULT_LAB_INVENTORY
from responder.inventory import HubMode, Inventory

STALE_AFTER_S = 300  # as the seed's check script (responder.pep.hub.STALE_AFTER_S)

app = typer.Typer(help="Enroll, check and inspect the hubs of the inventory.", no_args_is_help=True)


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
    agent = status.get("agent")
    mode = status["mode"] if not agent else f"{status['mode']} {agent['release']}, sha256 {agent['sha256'][:12]}"
    lines = [f"{status['hub']}: reachable ({mode}, {status['latency_ms']} ms); sets: {sets}"]
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
    """Reachability, the agent's release and sha256, peers with handshake age (stale after 300 s with
    keepalive on), and set sizes. Exit 1 if a hub is unreachable."""
    inv = inventory(config, inventory_path)
    statuses = asyncio.run(_statuses(inv))
    if as_json:
        typer.echo(json.dumps(statuses, indent=2))
    else:
        for s in statuses:
            typer.echo("\n".join(_render(inv, s)))
    if not all(s["reachable"] for s in statuses):
        raise typer.Exit(1)


@app.command()
def enroll(
    address: Annotated[str, typer.Argument(help="The hub's SSH address (host name or IP).", show_default=False)],
    name: Annotated[
        str | None, typer.Option("--name", help="The hub's name in the inventory. Default: derived from ADDRESS.")
    ] = None,
    user: Annotated[
        str, typer.Option("--user", help="Bootstrap account: root, or one with passwordless sudo.")
    ] = "root",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The hub's SSH port.")] = 22,
    identity: Annotated[
        Path,
        typer.Option(
            "--identity",
            help="Bootstrap private key, used to enroll and never stored. Default: ~/.ssh/id_ed25519.",
            show_default=False,
        ),
    ] = Path("~/.ssh/id_ed25519"),
    expect_fingerprint: Annotated[
        str | None,
        typer.Option(
            "--expect-fingerprint",
            help="The host key's SHA256 fingerprint, as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints "
            "it on the hub. Without it you are asked to confirm (refused when there is no terminal).",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        HubMode,
        typer.Option(
            "--mode",
            help="agent: install the hub agent as the key's forced command; agentless: root "
            "runs plain wg/nft/conntrack commands, nothing installed.",
        ),
    ] = HubMode.AGENT,
    owners: Annotated[
        Path | None,
        typer.Option(
            "--owners", help="CSV with a header: `public_key,owner[,name]` or `peer,owner`.", show_default=False
        ),
    ] = None,
    inventory_path: Annotated[
        Path | None,
        typer.Option(
            "--inventory", help="Inventory to write or merge into. Default: the configuration's.", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    responder_key: Annotated[
        Path,
        typer.Option(
            "--responder-key",
            help="The responder's public key file; its private key (same path "
            "without .pub) is what the inventory names.",
        ),
    ] = Path("/etc/responder/secrets/hub_ed25519.pub"),
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Address or CIDR the responder connects from (the key's from=). Default: the "
            "address the hub sees this connection come from.",
            show_default=False,
        ),
    ] = None,
    deny_sets: Annotated[
        list[str] | None,
        typer.Option(
            "--deny-set",
            help="TABLE:SET (or FAMILY:TABLE:SET) the agent may add to (a quarantine); "
            "repeatable. Default: the hub's current agent.json, else none.",
            show_default=False,
        ),
    ] = None,
    interface: Annotated[
        str | None,
        typer.Option("--interface", help="WireGuard interface. Default: the hub's only one.", show_default=False),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(
            "--table", help="nftables table that enforces. Default: the only one with sets.", show_default=False
        ),
    ] = None,
    netns: Annotated[
        Path | None,
        typer.Option(
            "--netns", help="Connect from this network namespace (a lab's management node).", show_default=False
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Change the hub and the inventory without asking first (the host key still "
            "needs --expect-fingerprint or your confirmation).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Connect, pin and read; print the inventory diff; change nothing.")
    ] = False,
) -> None:
    """Enroll a hub in one step: pin its host key, install the hub agent and the responder's
    forced-command authorized_keys line (or, agentless, the key alone), read its interface, peers and nft
    sets, and write or merge the inventory. Peers are named from the wg-quick file's comments (`# name`
    above a [Peer] block, or `# Name = x` in it), else from their tunnel address."""
    from responder.enrollment import DenySet, EnrollError, Enrollment, Owners, Target, enroll  # noqa: PLC0415

    path = inventory_path or settings(config).inventory or DEFAULT_LAB_INVENTORY
    try:
        request = Enrollment(
            target=Target(address, port, user, identity.expanduser(), netns),
            name=name or _hub_name(address),
            inventory_path=path,
            responder_key=responder_key.expanduser(),
            mode=mode,
            expect_fingerprint=expect_fingerprint,
            source=source,
            deny_sets=tuple(DenySet.parse(d) for d in deny_sets or ()),
            owners=Owners() if owners is None else Owners.parse(_read(owners), str(owners)),
            interface=interface,
            table=table,
            dry_run=dry_run,
        )
        # No terminal: no one to ask; the host key then needs --expect-fingerprint (--yes never trusts one).
        confirm = _ask if sys.stdin.isatty() else None
        apply = None if yes or confirm is None else confirm
        asyncio.run(enroll(request, confirm=confirm, apply=apply, say=typer.echo))
    except EnrollError as exc:
        raise fail(exc) from None


def _hub_name(address: str) -> str:
    from responder.enrollment.core import node_name  # noqa: PLC0415

    name = node_name(f"hub-{address}" if address.replace(".", "").isdigit() else address.split(".", 1)[0])
    if name is None:
        raise fail(f"cannot make a hub name from {address!r}: pass --name")
    return name


def _ask(question: str) -> bool:
    return typer.confirm(question, default=False)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from None


@app.command()
def check(config: ConfigOption = None, inventory_path: InventoryOption = None) -> None:
    """Verify the inventory against the live hubs, connecting with each pinned host key: one line per
    problem (host key mismatch, unreachable, agent version, peers missing on either side, sets missing).
    Exit 1 on any problem."""
    from responder.enrollment import AgentRelease, EnrollError, check  # noqa: PLC0415

    inv = inventory(config, inventory_path)
    try:
        agent = AgentRelease.shipped()
    except EnrollError as exc:
        raise fail(exc) from None
    results = asyncio.run(check(inv, agent))
    for hub, problems in results:
        for problem in problems:
            typer.echo(problem)
        if not problems:
            typer.echo(f"{hub}: ok ({len(inv.peers_on(hub))} peers)")
    if any(problems for _, problems in results):
        raise typer.Exit(1)
