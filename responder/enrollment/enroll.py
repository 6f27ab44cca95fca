"""`responder hubs enroll`: pin a hub's host key, read it, install the agent and the responder's key, and
write the inventory."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from responder.enrollment.check import check_hub
from responder.enrollment.core import (
    AGENT_CONFIG_PATH,
    AGENT_PATH,
    AGENT_STATE_PATH,
    AgentRelease,
    EnrollError,
    HubReading,
    Merge,
    Owners,
    authorized_key_line,
    diff,
    fingerprint,
    merge,
    with_authorized_key,
)
from responder.enrollment.remote import Bootstrap, Target, fetch_host_key, sha256
from responder.inventory import HubMode, HubSpec, Inventory, InventoryError, SshEndpoint

Confirm = Callable[[str], bool]
"""Asks the operator a yes/no question (an interactive prompt)."""


@dataclass(frozen=True, slots=True)
class DenySet:
    family: str
    table: str
    set: str

    @classmethod
    def parse(cls, text: str) -> DenySet:
        """`TABLE:SET` (family inet) or `FAMILY:TABLE:SET`."""
        parts = text.split(":")
        if len(parts) == 2:
            parts = ["inet", *parts]
        if len(parts) != 3 or not all(parts) or parts[0] not in ("inet", "ip", "ip6"):
            raise EnrollError(f"--deny-set {text!r}: expected TABLE:SET or FAMILY:TABLE:SET (family inet, ip or ip6)")
        return cls(*parts)

    def as_dict(self) -> dict[str, str]:
        return {"family": self.family, "table": self.table, "set": self.set}


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What the operator asked for."""

    target: Target
    name: str
    inventory_path: Path
    responder_key: Path
    """The responder's public key file (`.pub`); its private key, beside it without `.pub`, goes into the
    inventory as the hub's client key."""
    mode: HubMode = HubMode.AGENT
    expect_fingerprint: str | None = None
    source: str | None = None
    deny_sets: tuple[DenySet, ...] = ()
    owners: Owners = field(default_factory=Owners)
    interface: str | None = None
    table: str | None = None
    dry_run: bool = False
    agent: AgentRelease | None = None


def _same_fingerprint(a: str, b: str) -> bool:
    return a.removeprefix("SHA256:").rstrip("=") == b.strip().removeprefix("SHA256:").rstrip("=")


async def enroll(
    req: Enrollment, *, confirm: Confirm | None, say: Callable[[str], None], apply: Confirm | None = None
) -> None:
    """Enroll one hub; `say` gets the report, line by line; `confirm` is asked to trust a host key not
    given as expected (None: no one to ask, refused); `apply`, when given, is shown the inventory diff and
    asked before anything changes. Raises EnrollError (and does nothing more) when the host key is not
    confirmed, the hub cannot be read or the inventory would not validate: the hub is changed only after
    the merged inventory validates."""
    if not req.target.identity.is_file():
        raise EnrollError(f"the bootstrap key {req.target.identity} does not exist (--identity)")
    public_key = _read_key(req.responder_key)
    existing = _load(req.inventory_path)
    host_key = await _pin(req, confirm, say)
    agent = req.agent or AgentRelease.shipped()
    hub_ssh = await Bootstrap.open(req.target, host_key)
    try:
        plan = await _plan(req, hub_ssh, host_key, existing, public_key)
        if req.dry_run or apply is not None:
            say(plan.changes.rstrip("\n") if plan.changes else f"{req.inventory_path}: no change")
        if req.dry_run:
            say("dry run: nothing was changed on the hub or on disk")
            return
        what = "install the agent and its key" if req.mode is HubMode.AGENT else "authorize the responder's key"
        if apply is not None and not apply(f"Enroll {req.name}: {what} on {req.target.host}, write the inventory?"):
            raise EnrollError("not applied (nothing was changed)")
        if req.mode is HubMode.AGENT:
            installed = await _install_agent(hub_ssh, agent, plan.deny, plan.old_config, say)
            say(f"agent {agent.version} installed at {AGENT_PATH}, sha256 {installed}")
        await _authorize(hub_ssh, plan.key_line, say)
    finally:
        await hub_ssh.close()
    await _verify(plan.spec, agent, say)
    _report(req, plan, say)


async def _pin(req: Enrollment, confirm: Confirm | None, say: Callable[[str], None]) -> str:
    """The host key the hub presents, once the operator's expected fingerprint or word vouches for it."""
    target = req.target
    host_key = await fetch_host_key(target)
    fp = fingerprint(host_key)
    say(f"host key of {target.host}:{target.port}: {host_key.split()[0]} {fp}")
    if req.expect_fingerprint is not None:
        if not _same_fingerprint(fp, req.expect_fingerprint):
            raise EnrollError(f"host key {fp} is not the expected {req.expect_fingerprint}: refused, nothing changed")
    elif confirm is None:
        raise EnrollError("cannot confirm the host key without a terminal: pass --expect-fingerprint SHA256:...")
    elif not confirm(f"Trust {fp} as the host key of {target.host}?"):
        raise EnrollError("host key not confirmed (nothing was changed)")
    return host_key


@dataclass(frozen=True, slots=True)
class _Plan:
    """What an enrollment will do, decided before anything on the hub changes."""

    spec: HubSpec
    reading: HubReading
    merged: Merge
    deny: tuple[DenySet, ...]
    old_config: str | None
    key_line: str
    new_text: str
    changes: str


async def _plan(
    req: Enrollment, hub_ssh: Bootstrap, host_key: str, existing: Inventory | None, public_key: str
) -> _Plan:
    old_config = await hub_ssh.read_file(AGENT_CONFIG_PATH) if req.mode is HubMode.AGENT else None
    deny = req.deny_sets or _deny_sets(old_config)
    reading = await hub_ssh.read(req.interface, req.table, [d.table for d in deny])
    source = req.source or await hub_ssh.ssh_client_address()
    if not source:
        raise EnrollError("cannot tell the responder's address as the hub sees it: pass --from CIDR")
    try:
        source_net = ipaddress.ip_network(source, strict=False)
    except ValueError:
        raise EnrollError(f"--from {source!r} is not an address or CIDR") from None
    key = req.responder_key
    spec = HubSpec(
        name=req.name,
        ssh=SshEndpoint(
            host=req.target.host,
            port=req.target.port,
            user="root",
            host_key=host_key,
            client_key=key.with_suffix("") if key.suffix == ".pub" else key,
            netns=req.target.netns,
        ),
        mode=req.mode,
        interface=reading.interface,
        table=reading.table,
        tunnel_network=reading.network,
        address=reading.address,
    )
    single = source_net.num_addresses == 1
    merged = merge(
        existing,
        spec,
        reading,
        owners=req.owners,
        deny_sets=[d.set for d in deny if d.table == reading.table],
        management=[source_net.network_address] if single else [],
    )
    old_text = req.inventory_path.read_text() if existing is not None else ""
    new_text = merged.inventory.to_yaml()
    allowed = str(source_net.network_address) if single else source_net.with_prefixlen
    return _Plan(
        spec=spec,
        reading=reading,
        merged=merged,
        deny=tuple(deny),
        old_config=old_config,
        key_line=authorized_key_line(
            public_key, source=allowed, command=AGENT_PATH if req.mode is HubMode.AGENT else None
        ),
        new_text=new_text,
        changes=diff(old_text, new_text, str(req.inventory_path)),
    )


def _report(req: Enrollment, plan: _Plan, say: Callable[[str], None]) -> None:
    merged, reading = plan.merged, plan.reading
    say(f"pinned host key {fingerprint(plan.spec.ssh.host_key)} for {req.name}")
    say(f"{len(reading.peers)} peers on {reading.interface}: {merged.added} added, {merged.kept} already listed")
    for note in merged.notes:
        say(note)
    if merged.gone:
        say(f"in the inventory but not on the hub (kept; remove them by hand if gone): {', '.join(merged.gone)}")
    if merged.unknown_owner:
        say(f"owner unknown for {merged.unknown_owner} peers: fill them in ({req.inventory_path})")
    listed = ", ".join(f"{s} ({'?' if e is None else len(e)})" for s, e in sorted(reading.sets.items()))
    say(f"sets in table {reading.table}: {listed or 'none'}")
    if plan.changes:
        _write_atomically(req.inventory_path, plan.new_text)
        say(f"inventory written: {req.inventory_path}")
    else:
        say(f"inventory unchanged: {req.inventory_path}")


def _load(path: Path) -> Inventory | None:
    if not path.exists():
        return None
    try:
        return Inventory.load(path)
    except InventoryError as exc:
        raise EnrollError(str(exc).splitlines()[0]) from None


def _read_key(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise EnrollError(f"cannot read the responder's public key {path}: {exc.strerror}") from None


def _deny_sets(config: str | None) -> tuple[DenySet, ...]:
    """The deny sets of an agent.json already on the hub (kept when none are given)."""
    if not config:
        return ()
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        return tuple(DenySet(d.get("family", "inet"), d["table"], d["set"]) for d in json.loads(config)["deny_sets"])
    return ()


async def _install_agent(
    hub: Bootstrap, agent: AgentRelease, deny: Sequence[DenySet], old_config: str | None, say: Callable[[str], None]
) -> str:
    await hub.sh(
        'mkdir -p "$1" "$2" && install -d -m 0700 -o 0 -g 0 "$3"',
        str(PurePosixPath(AGENT_PATH).parent),
        str(PurePosixPath(AGENT_CONFIG_PATH).parent),
        AGENT_STATE_PATH,
    )
    installed = await hub.install(AGENT_PATH, agent.text, "0755")
    config = json.dumps({"deny_sets": [d.as_dict() for d in deny]}, indent=2) + "\n"
    if old_config is None or _deny_sets(old_config) != tuple(deny):
        before = "none" if old_config is None else sha256(old_config.encode())
        await hub.install(AGENT_CONFIG_PATH, config.encode(), "0644", before=before)
    if deny:
        say(f"deny sets ({AGENT_CONFIG_PATH}): {', '.join(f'{d.family} {d.table} {d.set}' for d in deny)}")
    else:
        say(f"no deny sets ({AGENT_CONFIG_PATH}): the agent adds to no set; pass --deny-set TABLE:SET to quarantine")
    return installed


async def _authorize(hub: Bootstrap, line: str, say: Callable[[str], None]) -> None:
    home = (await hub.sh("getent passwd root | cut -d: -f6")).strip() or "/root"
    path = f"{home}/.ssh/authorized_keys"
    await hub.sh('install -d -m 0700 -o 0 -g 0 "$1"', f"{home}/.ssh")
    existing = await hub.read_file(path)
    wanted = with_authorized_key(existing or "", line)
    if existing == wanted:
        say(f"authorized_keys entry already present ({path})")
        return
    before = "none" if existing is None else sha256(existing.encode())
    await hub.install(path, wanted.encode(), "0600", before=before)
    replaced = len(wanted.splitlines()) == len((existing or "").splitlines())
    say(f"authorized_keys entry {'replaced' if replaced else 'added'} ({path}): {line}")


async def _verify(spec: HubSpec, agent: AgentRelease, say: Callable[[str], None]) -> None:
    """Connect as the responder will (its key, the pinned host key) and ask the agent who it is."""
    if not spec.ssh.client_key.exists():
        say(f"not verified: the responder's private key {spec.ssh.client_key} is not on this machine")
        return
    problems = await check_hub(spec, None, agent)
    if problems:
        raise EnrollError(f"installed, but the responder cannot use it: {problems[0]}")
    say(f"verified: the responder's key reaches the hub{' agent' if spec.mode is HubMode.AGENT else ''}")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
