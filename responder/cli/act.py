"""`responder act`: manual response through the same executor, journal and verification as the service."""

from __future__ import annotations

import asyncio
import functools
import getpass
import inspect
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

from responder.cli.common import ConfigOption, InventoryOption, JournalOption, JsonOption, fail, inventory, settings
from responder.core.actions import Action, ActionType
from responder.core.identifiers import WireGuardKey, parse_address
from responder.inventory import Inventory, PeerSpec

if TYPE_CHECKING:  # the enforcement stack loads only when a command runs: `--help` stays quick
    from responder.executor import IntentOutcome

app = typer.Typer(
    help="Act on hubs by hand: each action is journaled, applied, verified by reading the hub back, and "
    "can be restored with `responder act restore ID`.",
    no_args_is_help=True,
)

HubOption = Annotated[
    str | None, typer.Option("--hub", help="The hub to act on (default: the hub of --peer).", show_default=False)
]
PeerOption = Annotated[
    str | None, typer.Option("--peer", help="A peer by its inventory name (e.g. admin1).", show_default=False)
]
KeyOption = Annotated[str | None, typer.Option("--key", help="A peer by its WireGuard public key.", show_default=False)]
ElementOption = Annotated[
    str | None, typer.Option("--element", help="An address (default: the tunnel IP of --peer).", show_default=False)
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the hub operations; change nothing.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded in the audit trail.")]
RulesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--rules", help="Rule files or directories whose `protected:` applies (default: the configuration's).",
        show_default=False,
    ),
]  # fmt: skip
ForceOption = Annotated[
    str | None,
    typer.Option(
        "--force-protected", metavar="REASON", show_default=False,
        help="Act on a protected target all the same; REASON is recorded in the audit trail.",
    ),
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Acting:
    """The options every acting command takes after its own: how to act, why, and where the state is."""

    dry_run: DryRunOption = False
    as_json: JsonOption = False
    reason: ReasonOption = "manual"
    config: ConfigOption = None
    inventory_path: InventoryOption = None
    journal: JournalOption = None
    rules: RulesOption = None
    force_protected: ForceOption = None

    def inventory(self) -> Inventory:
        return inventory(self.config, self.inventory_path)


def acting(command: Callable[..., None]) -> Callable[..., None]:
    """`command(acting: Acting, **own options)` as a typer command: its own options, then those of `Acting`
    (the same names, help and defaults in every command), which reach it as one `Acting`."""
    own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]
    hints = get_type_hints(Acting, include_extras=True)  # the Annotated aliases, with their typer.Option
    shared = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in fields(Acting)
    ]

    @functools.wraps(command)
    def with_acting(**options: Any) -> None:
        command(Acting(**{f.name: options.pop(f.name) for f in fields(Acting)}), **options)

    parameters = [*own, *shared]
    with_acting.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    with_acting.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_acting


def _peer(inv: Inventory, name: str, hub: str | None) -> PeerSpec:
    matches = [p for p in inv.peers if p.name == name and (hub is None or p.hub == hub)]
    if not matches:
        raise fail(f"no peer named {name!r}" + (f" on hub {hub}" if hub else "") + " in the inventory")
    if len(matches) > 1:
        raise fail(f"peer {name!r} is on several hubs ({', '.join(p.hub for p in matches)}); say which with --hub")
    return matches[0]


def _hub(inv: Inventory, hub: str | None, peer: PeerSpec | None) -> str:
    name = hub or (peer.hub if peer else None)
    if name is None:
        raise fail("say which hub with --hub")
    try:
        inv.hub(name)
    except KeyError as exc:
        raise fail(exc.args[0]) from None
    return name


def _key_target(inv: Inventory, hub: str | None, peer: str | None, key: str | None) -> tuple[str, WireGuardKey]:
    if (peer is None) == (key is None):
        raise fail("give exactly one of --peer and --key")
    if peer is not None:
        spec = _peer(inv, peer, hub)
        return _hub(inv, hub, spec), spec.public_key
    try:
        parsed = WireGuardKey(key or "")
    except ValueError as exc:
        raise fail(f"--key: {exc}") from None
    return _hub(inv, hub, None), parsed


def _address(inv: Inventory, hub: str | None, peer: str | None, element: str | None) -> tuple[str, str]:
    if (peer is None) == (element is None):
        raise fail("give exactly one of --peer and --element")
    if peer is not None:
        spec = _peer(inv, peer, hub)
        return _hub(inv, hub, spec), str(spec.tunnel_ip)
    try:
        address = parse_address(element or "")
    except ValueError as exc:
        raise fail(f"--element: {exc}") from None
    return _hub(inv, hub, None), str(address)


def _action(**fields: object) -> Action:
    try:
        if isinstance(fields.get("address"), str):
            fields["address"] = parse_address(str(fields["address"]))
        return Action(**fields)  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(exc) from None


def _render(outcome: IntentOutcome) -> str:
    r = outcome.result
    mark = "verified" if r.verified else ("NOT VERIFIED" if r.ok else "FAILED")
    detail = "" if r.detail == mark else f" — {r.detail}"
    return f"{outcome.intent_id}  {r.action.describe()}: {mark}{detail} ({r.duration_ms:.1f} ms)"


def _protected(actions: Sequence[Action], inv: Inventory, config: Path | None, rules: list[Path] | None) -> list[str]:
    """What the service's own veto would refuse among `actions`, and why: protected users, devices, keys
    and networks from the rules, every hub address and the management addresses from the inventory."""
    from responder.core.identity import IdentityMap  # noqa: PLC0415
    from responder.policy.loader import PolicyError, load_rules  # noqa: PLC0415
    from responder.service.guard import ProtectedTargets  # noqa: PLC0415

    paths = tuple(rules) if rules else settings(config).rules
    try:
        protection = load_rules(paths).protection
    except PolicyError as exc:
        raise fail(f"cannot tell which targets are protected (say where the rules are with --rules):\n{exc}") from None
    veto = ProtectedTargets(protection, IdentityMap(inv))
    return [f"{a.describe()}: {why}" for a in actions if (why := veto(a))]


def _run(
    actions: Sequence[Action], inv: Inventory, journal_url: str, reason: str, override: dict[str, object] | None
) -> list[IntentOutcome]:
    from responder.executor import Executor  # noqa: PLC0415
    from responder.journal import open_journal  # noqa: PLC0415
    from responder.pep import SshHub  # noqa: PLC0415

    async def go() -> list[IntentOutcome]:
        journal = await open_journal(journal_url)
        hubs = {a.hub: SshHub(inv.hub(a.hub), peers=inv.allowed_ips(a.hub)) for a in actions}
        try:
            executor = Executor(journal, hubs, lambda: datetime.now(UTC))
            return await executor.manual(actions, _actor(), reason, override=override)
        finally:
            for hub in hubs.values():
                await hub.close()
            await journal.close()

    return asyncio.run(go())


def _actor() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _execute(actions: list[Action], inv: Inventory, options: Acting) -> None:
    config, as_json, force = options.config, options.as_json, options.force_protected
    # Refused before anything is planned, journaled or sent: also a dry run shows only what may be done.
    refused = _protected(actions, inv, config, options.rules)
    override: dict[str, object] | None = None
    if refused:
        if not force or not force.strip():
            raise fail(
                "refused, protected target: " + "; ".join(refused)
                + ". Repeat with --force-protected REASON to act all the same (the reason is audited)."
            )  # fmt: skip
        override = {"reason": force.strip(), "protected": refused}
        typer.secho(f"warning: acting on a protected target ({force.strip()}): {'; '.join(refused)}", err=True)
    if options.dry_run:
        from responder.pep.plan import plan  # noqa: PLC0415

        hub = actions[0].hub  # every command acts on one hub
        ops = [{"hub": hub, "op": o.op, "args": o.args} for o in plan(inv.hub(hub), actions)]
        if as_json:
            typer.echo(json.dumps({"dry_run": True, "operations": ops}, indent=2))
        else:
            for o in ops:
                typer.echo(f"would run on {o['hub']}: {o['op']} {json.dumps(o['args'], sort_keys=True)}")
        return
    url = options.journal or settings(config).journal
    try:
        outcomes = _run(actions, inv, url, options.reason, override)
    except (OSError, ValueError) as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps([o.as_dict() for o in outcomes], indent=2))
    else:
        for outcome in outcomes:
            typer.echo(_render(outcome))
        if any(o.result.ok and o.result.action.reversible for o in outcomes):
            typer.echo("undo with: responder act restore ID")
    if not all(o.result.ok and o.result.verified for o in outcomes):
        raise typer.Exit(1)


@app.command("remove-peer")
@acting
def remove_peer(options: Acting, hub: HubOption = None, peer: PeerOption = None, key: KeyOption = None) -> None:
    """Remove a WireGuard peer from its hub; its tunnel stops at once. Restorable."""
    inv = options.inventory()
    hub_name, public_key = _key_target(inv, hub, peer, key)
    _execute([_action(type=ActionType.REMOVE_PEER, hub=hub_name, peer_key=public_key)], inv, options)


@app.command("delete-element")
@acting
def delete_element(
    options: Acting,
    set_name: Annotated[str, typer.Option("--set", help="The nft set, e.g. admin_devices.")],
    hub: HubOption = None, peer: PeerOption = None, element: ElementOption = None,
) -> None:  # fmt: skip
    """Delete an address from an nft set: it loses what the set grants. Restorable."""
    inv = options.inventory()
    hub_name, address = _address(inv, hub, peer, element)
    action = _action(type=ActionType.DELETE_ELEMENT, hub=hub_name, address=address, set_name=set_name)
    _execute([action], inv, options)


@app.command()
@acting
def quarantine(
    options: Acting, hub: HubOption = None, peer: PeerOption = None, element: ElementOption = None,
    set_name: Annotated[str, typer.Option("--set", help="The deny set.")] = "quarantine",
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Seconds; the kernel expires it.")] = 3600,
    kill_flows: Annotated[bool, typer.Option("--kill-flows/--keep-flows", help="Also end open flows.")] = True,
) -> None:  # fmt: skip
    """Quarantine an address for a time (checked before established flows; expires in the kernel)."""
    inv = options.inventory()
    hub_name, address = _address(inv, hub, peer, element)
    actions = [_action(type=ActionType.QUARANTINE, hub=hub_name, address=address, set_name=set_name, ttl_s=ttl)]
    if kill_flows:
        actions.append(_action(type=ActionType.KILL_FLOWS, hub=hub_name, address=address))
    _execute(actions, inv, options)


@app.command("kill-flows")
@acting
def kill_flows_(options: Acting, hub: HubOption = None, peer: PeerOption = None, element: ElementOption = None) -> None:
    """End the established flows of an address (conntrack), e.g. after deleting it from a set."""
    inv = options.inventory()
    hub_name, address = _address(inv, hub, peer, element)
    _execute([_action(type=ActionType.KILL_FLOWS, hub=hub_name, address=address)], inv, options)


@app.command("rotate-key")
@acting
def rotate_key(
    options: Acting, hub: HubOption = None, peer: PeerOption = None, key: KeyOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
) -> None:  # fmt: skip
    """Force key rotation: remove the peer and deny its key for good; the device must enroll a new key.
    Irreversible, so it needs --yes."""
    inv = options.inventory()
    hub_name, public_key = _key_target(inv, hub, peer, key)
    if not yes and not options.dry_run:
        raise fail("rotate-key revokes the key for good; repeat with --yes")
    _execute([_action(type=ActionType.ROTATE_KEY, hub=hub_name, peer_key=public_key)], inv, options)


@app.command()
def restore(
    action_id: Annotated[str, typer.Argument(help="The id printed when the action was taken (e.g. m-1a2b3c4d5e6f.1).")],
    as_json: JsonOption = False, config: ConfigOption = None, inventory_path: InventoryOption = None,
    journal: JournalOption = None,
) -> None:  # fmt: skip
    """Take back one action (re-add the peer as it was, re-add or remove the set element), verified."""
    from responder.executor import Executor, RestoreRefused  # noqa: PLC0415
    from responder.journal import open_journal  # noqa: PLC0415
    from responder.pep import SshHub  # noqa: PLC0415

    inv = inventory(config, inventory_path)
    url = journal or settings(config).journal

    async def go() -> IntentOutcome:
        j = await open_journal(url)
        hubs = {h.name: SshHub(h, peers=inv.allowed_ips(h.name)) for h in inv.hubs}
        try:
            return await Executor(j, hubs, lambda: datetime.now(UTC)).restore(action_id, _actor())
        finally:
            for h in hubs.values():
                await h.close()
            await j.close()

    try:
        outcome = asyncio.run(go())
    except RestoreRefused as exc:
        raise fail(exc) from None
    typer.echo(json.dumps(outcome.as_dict(), indent=2) if as_json else _render(outcome))
    if not (outcome.result.ok and outcome.result.verified):
        raise typer.Exit(1)
