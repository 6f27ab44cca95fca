"""`responder lab`: real hubs in network namespaces, for tests and demos."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from responder.lab import Lab, LabError, LabStatus, faults
from responder.lab.lab import STATE_ROOT
from responder.lab.process import CommandError

app = typer.Typer(
    help="Build and inspect the local lab: WireGuard hubs, peers and a management node, each in its own "
    "network namespace. Needs root. Nothing is added to the machine's own network namespace.",
    no_args_is_help=True,
)

Prefix = Annotated[
    str,
    typer.Option(
        "--prefix",
        envvar="RESPONDER_LAB_PREFIX",
        help="Name prefix of the lab's namespaces; labs with distinct prefixes coexist.",
    ),
]
StateRoot = Annotated[Path, typer.Option("--state-root", help="Where labs keep keys, logs and inventory.")]


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@app.command()
def up(
    prefix: Prefix = "rsp",
    hubs: Annotated[
        int,
        typer.Option("--hubs", min=1, max=200, help="Number of hubs (each with its own admin and app peer)."),
    ] = 1,
    state_root: StateRoot = STATE_ROOT,
    bare: Annotated[
        bool,
        typer.Option(
            "--bare",
            help="Hubs as before enrollment: no inventory, no agent, only the bootstrap key authorized for "
            "root; enroll them with `responder hubs enroll`.",
        ),
    ] = False,
) -> None:
    """Build the lab from scratch (a previous lab with the same prefix is removed first)."""
    try:
        lab = Lab(prefix, hubs, state_root, bare=bare)
        asyncio.run(lab.up())
    except (LabError, CommandError, ValueError, OSError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"lab {prefix!r} is up: {', '.join(lab.topology.names)}")
    if not bare:
        typer.echo(f"inventory: {lab.inventory_path}")
        return
    from responder.enrollment import fingerprint  # noqa: PLC0415 - only a bare lab prints fingerprints
    from responder.lab.topology import Role  # noqa: PLC0415

    typer.echo(f"bootstrap key: {lab.bootstrap_key}; responder key: {lab.agent_key.with_suffix('.pub')}")
    for node in (n for n in lab.topology.nodes if n.role is Role.HUB):
        print_fp = fingerprint(lab.host_key(node.name).read_text())
        typer.echo(
            f"enroll {node.name}: responder hubs enroll {node.underlay} --name {node.name} "
            f"--identity {lab.bootstrap_key} --responder-key {lab.agent_key.with_suffix('.pub')} "
            f"--expect-fingerprint {print_fp} --deny-set zerotrust:quarantine --netns {lab.netns_path('soc')} "
            f"--inventory {lab.inventory_path}"
        )


@app.command()
def down(prefix: Prefix = "rsp", state_root: StateRoot = STATE_ROOT) -> None:
    """Remove every namespace, process, mount and file the lab created."""
    if os.geteuid() != 0:
        raise _fail(LabError("the lab needs root"))
    lab = Lab(prefix, 1, state_root)
    removed = asyncio.run(lab.down())
    typer.echo(f"lab {prefix!r}: removed {len(removed)} items" if removed else f"lab {prefix!r}: nothing to remove")


def _render(status: LabStatus) -> str:
    lines = [f"lab {status.prefix}: {'healthy' if status.healthy else 'UNHEALTHY'}"]
    if status.missing:
        lines.append(f"  missing nodes: {', '.join(status.missing)}")
        return "\n".join(lines)
    lines.append("handshakes (hub <- peer: age):")
    for h in status.handshakes:
        age = "never" if h.age_s is None else f"{h.age_s:.0f}s ago"
        lines.append(f"  {h.hub} <- {h.peer}: {age}")
    lines.append("reachability (real packets):")
    width = max(len(p.check.label) for p in status.matrix)
    for p in status.matrix:
        mark = "ok  " if p.passed else "FAIL"
        lines.append(
            f"  {mark} {p.check.label:<{width}}  expect {p.check.expect:<5}  got {p.outcome:<9}  ({p.check.why})"
        )
    return "\n".join(lines)


@app.command()
def status(
    prefix: Prefix = "rsp",
    state_root: StateRoot = STATE_ROOT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Handshake ages and the reachability matrix, checked with real packets. Exit 1 if unhealthy."""
    try:
        lab = Lab.existing(prefix, state_root)
        result = asyncio.run(lab.status())
    except (LabError, OSError) as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(result.as_dict(), indent=2) if as_json else _render(result))
    if not result.healthy:
        raise typer.Exit(1)


@app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_(
    node: Annotated[str, typer.Argument(help="Node name: soc, hub1, admin1, app1, ...")],
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.")],
    prefix: Prefix = "rsp",
    state_root: StateRoot = STATE_ROOT,
) -> None:
    """Run a command inside a node, e.g. `responder lab exec hub1 -- wg show`."""
    try:
        lab = Lab.existing(prefix, state_root)
        argv = lab.nsenter(node, *command)
    except (LabError, KeyError) as exc:
        raise _fail(exc) from exc
    sys.stdout.flush()
    os.execvp(argv[0], argv)  # noqa: S606 - fixed argv, replaces this process so the command is interactive


class Fault(StrEnum):
    PARTITION = "partition"
    HEAL = "heal"
    RESTART_SSHD = "restart-sshd"
    KILL_AGENT = "kill-agent"
    REBOOT = "reboot"


async def _inflict(lab: Lab, fault: Fault, hub: str, answers_only: bool) -> str:
    match fault:
        case Fault.PARTITION:
            await faults.partition(lab, hub, answers_only=answers_only)
            return f"{hub}: management path dropped ({'answers only' if answers_only else 'both ways'})"
        case Fault.HEAL:
            await faults.heal(lab, hub)
            return f"{hub}: management path restored"
        case Fault.RESTART_SSHD:
            await faults.restart_sshd(lab, hub)
            return f"{hub}: sshd restarted; its connections ended"
        case Fault.KILL_AGENT:
            return f"{hub}: {await faults.kill_agents(lab, hub)} hub agents killed"
        case Fault.REBOOT:
            await faults.reboot(lab, hub)
            return f"{hub}: wg0 rebuilt by wg-quick from its wg0.conf, the zerotrust table from its ruleset file"


@app.command()
def fault(
    kind: Annotated[Fault, typer.Argument(help="What happens to the hub.")],
    hub: Annotated[str, typer.Argument(help="The hub: hub1, hub2, ...")],
    prefix: Prefix = "rsp",
    state_root: StateRoot = STATE_ROOT,
    answers_only: Annotated[
        bool, typer.Option("--answers-only", help="partition: drop only what the hub sends back.")
    ] = False,
) -> None:
    """A real fault on a hub, to watch the responder through it: a partition of its management path (nft
    in the hub), its heal, an sshd restart, the hub agents killed, a reboot (`wg-quick down/up` of wg0 and
    `nft -f` of the hub's ruleset file)."""
    if os.geteuid() != 0:
        raise _fail(LabError("the lab needs root"))
    try:
        lab = Lab.existing(prefix, state_root)
        typer.echo(asyncio.run(_inflict(lab, kind, hub, answers_only)))
    except (LabError, CommandError, KeyError, OSError) as exc:
        raise _fail(exc) from exc
