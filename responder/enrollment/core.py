"""What enrolling a hub decides, without touching the hub or the disk: the host key's fingerprint, peer
names from a wg-quick file's comments, owners from a CSV, the responder's authorized_keys line, and the
inventory merged with what was read from the hub."""

from __future__ import annotations

import base64
import csv
import difflib
import hashlib
import io
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from responder.core.identifiers import IPAddress, IPNetwork, WireGuardKey
from responder.inventory import HubSpec, Inventory, PeerSpec

AGENT_SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "hub" / "responder_hub_agent.py"
AGENT_PATH = "/usr/local/sbin/responder-hub-agent"
AGENT_CONFIG_PATH = "/etc/responder-hub/agent.json"
AGENT_STATE_PATH = "/var/lib/responder-hub"

_NODE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_RELEASE = re.compile(r'^__version__ = "([^"]+)"', re.MULTILINE)


class EnrollError(Exception):
    """Enrollment cannot go on; the message says what to change. Nothing further was done."""


def fingerprint(host_key: str) -> str:
    """`SHA256:...` of an OpenSSH public key line, as `ssh-keygen -lf` prints it."""
    blob = base64.b64decode(host_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class AgentRelease:
    """The hub agent this responder ships: its release version and the sha256 of the file."""

    version: str
    sha256: str
    text: bytes

    @classmethod
    def of(cls, text: bytes) -> AgentRelease:
        found = _RELEASE.search(text.decode("utf-8", "replace"))
        return cls(found.group(1) if found else "unknown", hashlib.sha256(text).hexdigest(), text)

    @classmethod
    def shipped(cls, path: Path = AGENT_SOURCE) -> AgentRelease:
        try:
            return cls.of(path.read_bytes())
        except OSError as exc:
            raise EnrollError(f"cannot read the hub agent {path}: {exc.strerror}") from None


# -- peer names -------------------------------------------------------------------------------------------

_NAME_FIELD = re.compile(r"^#+\s*(?:name|friendly_?name|peer)\s*[=:]\s*(.+?)\s*$", re.IGNORECASE)


def peer_names(conf: str) -> dict[str, str]:
    """Names of peers by public key, from a wg-quick file's comments: a `# name` line directly above a
    `[Peer]` section, or a `# Name = x` (also `# FriendlyName = x`, `# name: x`) line inside it. A name
    inside the section wins over one above it."""
    names: dict[str, str] = {}
    above: str | None = None  # the comment on the line just before the current one
    section_name: str | None = None
    section_key: str | None = None
    in_peer = False

    def close() -> None:
        if in_peer and section_key and section_name:
            names[section_key] = section_name

    for raw in conf.splitlines():
        line = raw.strip()
        if line.startswith("["):
            close()
            in_peer = line.lower() == "[peer]"
            section_name, section_key = (above if in_peer else None), None
            above = None
            continue
        if line.startswith("#"):
            named = _NAME_FIELD.match(line)
            if in_peer and named:
                section_name = named.group(1)
            above = named.group(1) if named else line.lstrip("#").strip() or None
            continue
        above = None
        if in_peer and "=" in line:
            name, _, value = line.partition("=")
            if name.strip().lower() == "publickey":
                section_key = value.strip()
    close()
    return names


def node_name(text: str) -> str | None:
    """`text` as an inventory name (lowercase, `[a-z0-9-]`, a letter first), or None when nothing is left."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.strip().lower()).strip("-")[:31].rstrip("-")
    return name if _NODE.fullmatch(name) else None


def derived_name(address: IPAddress) -> str:
    return "peer-" + str(address).replace(".", "-").replace(":", "-")


# -- owners -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owners:
    """Owners (and optional names) by peer public key, or owners by peer name."""

    by_key: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    by_name: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, source: str = "owners") -> Owners:
        """A CSV with a header: `public_key,owner[,name]`, or `peer,owner` (the peer's inventory name)."""
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return cls()
        header = [h.strip().lower() for h in rows[0]]
        by_key: dict[str, tuple[str, str | None]] = {}
        by_name: dict[str, str] = {}
        if header[:2] == ["public_key", "owner"] and header[2:] in ([], ["name"]):
            for n, row in enumerate(rows[1:], start=2):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2:
                    raise EnrollError(f"{source}:{n}: expected public_key,owner[,name]")
                try:
                    key = str(WireGuardKey(row[0].strip()))
                except ValueError as exc:
                    raise EnrollError(f"{source}:{n}: {exc}") from None
                name = row[2].strip() if len(row) > 2 and row[2].strip() else None
                by_key[key] = (row[1].strip(), name)
        elif header == ["peer", "owner"]:
            for n, row in enumerate(rows[1:], start=2):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise EnrollError(f"{source}:{n}: expected peer,owner")
                by_name[row[0].strip()] = row[1].strip()
        else:
            raise EnrollError(f"{source}:1: the header must be `public_key,owner[,name]` or `peer,owner`")
        return cls(by_key, by_name)

    def owner(self, key: str, name: str) -> str | None:
        return (self.by_key[key][0] if key in self.by_key else self.by_name.get(name)) or None

    def name(self, key: str) -> str | None:
        return self.by_key[key][1] if key in self.by_key else None


# -- authorized_keys --------------------------------------------------------------------------------------


def authorized_key_line(public_key: str, *, source: str, command: str | None) -> str:
    """The one line that lets the responder's key in: only from `source`; with `command`, nothing but that
    command (the hub agent), without forwarding or a TTY."""
    parts = public_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise EnrollError("the responder key must be an OpenSSH public key line, e.g. 'ssh-ed25519 AAAA...'")
    key = " ".join(parts[:3])
    if command is None:
        return f'from="{source}",no-port-forwarding,no-agent-forwarding,no-X11-forwarding {key}'
    return f'from="{source}",restrict,command="{command}" {key}'


def _key_blob(line: str) -> str | None:
    """The base64 key of an authorized_keys line (after its options, if any)."""
    tokens = line.split()
    for i, token in enumerate(tokens[:-1]):
        if token.startswith(("ssh-", "ecdsa-", "sk-")):
            return tokens[i + 1]
    return None


def with_authorized_key(existing: str, line: str) -> str:
    """`existing` authorized_keys with `line` as the only line for its key: a previous line for the same key
    is replaced in place, other lines are kept as they are."""
    blob = _key_blob(line)
    out, placed = [], False
    for old in existing.splitlines():
        if not old.lstrip().startswith("#") and blob is not None and _key_blob(old) == blob:
            if not placed:
                out.append(line)
                placed = True
            continue
        out.append(old)
    if not placed:
        out.append(line)
    return "\n".join(out) + "\n"


# -- what the hub holds and the inventory becomes ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubPeer:
    """A peer as read from the hub: its key and allowed IPs (never a private or preshared key)."""

    public_key: str
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HubReading:
    """What enrollment read from a hub."""

    interface: str
    address: IPAddress
    network: IPNetwork
    peers: tuple[HubPeer, ...]
    sets: Mapping[str, frozenset[IPAddress] | None]
    """The sets of the hub's table, with their address elements (None: not an address set)."""
    table: str
    conf_names: Mapping[str, str]


@dataclass
class Merge:
    inventory: Inventory
    notes: list[str]
    added: int = 0
    kept: int = 0
    unknown_owner: int = 0
    gone: list[str] = field(default_factory=list)


def tunnel_address(peer: HubPeer, network: IPNetwork) -> IPAddress | None:
    """The peer's own tunnel address: a single-address allowed IP inside the hub's tunnel network."""
    for text in peer.allowed_ips:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if net.num_addresses == 1 and net.network_address in network:
            return net.network_address
    return None


def merge(
    existing: Inventory | None,
    hub: HubSpec,
    reading: HubReading,
    *,
    owners: Owners,
    deny_sets: Iterable[str],
    management: Sequence[IPAddress] = (),
) -> Merge:
    """The inventory with `hub` enrolled: its peers as read, named from the operator's CSV, else the config
    file's comments, else their tunnel address; a peer already in the inventory (same hub and key) keeps
    the name, owner, device and sets the operator gave it. Peers of the inventory no longer on the hub are
    kept and reported. Raises EnrollError when the hub is there with another host key or the result does
    not validate."""
    others = [p for p in existing.peers if p.hub != hub.name] if existing else []
    listed = [p for p in existing.peers if p.hub == hub.name] if existing else []
    mine = {str(p.public_key): p for p in listed}
    taken = {p.name for p in (*others, *listed)}
    deny = set(deny_sets)
    out = Merge(inventory=existing or Inventory(hubs=()), notes=[])
    updated: dict[str, PeerSpec] = {}
    new: list[PeerSpec] = []
    for found in reading.peers:
        address = tunnel_address(found, reading.network)
        if address is None:
            out.notes.append(
                f"peer {found.public_key}: no single address in {reading.network} among its allowed IPs "
                f"({', '.join(found.allowed_ips) or 'none'}): not added"
            )
            continue
        previous = mine.pop(found.public_key, None)
        if previous is not None:
            peer = previous.model_copy(update={"tunnel_ip": address})
            if peer.owner is None and (owner := owners.owner(found.public_key, peer.name)):
                peer = peer.model_copy(update={"owner": owner})
            updated[found.public_key] = peer
            out.kept += 1
        else:
            peer = _new_peer(found, address, hub.name, reading, owners=owners, deny=deny, taken=taken)
            new.append(peer)
            out.added += 1
        taken.add(peer.name)
        out.unknown_owner += peer.owner is None
    out.gone = sorted(p.name for p in mine.values())
    # The inventory's order stays (the hub lists its peers in no fixed order); new peers follow, by address.
    # Peers no longer on the hub are kept: removing a device from the inventory is the operator's call.
    peers = [updated.get(str(p.public_key), p) for p in listed]
    peers += sorted(new, key=lambda p: (p.tunnel_ip.version, p.tunnel_ip))
    addresses = list(existing.management_addresses) if existing else []
    addresses += [a for a in management if a not in addresses]
    try:
        out.inventory = Inventory(
            hubs=_with_hub(existing.hubs if existing else (), hub),
            overlays=existing.overlays if existing else (),
            peers=(*others, *peers),
            management_addresses=tuple(addresses),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'inventory'}: {e['msg']}" for e in exc.errors())
        raise EnrollError(f"the merged inventory does not validate: {problems}") from None
    return out


def _with_hub(hubs: Sequence[HubSpec], hub: HubSpec) -> tuple[HubSpec, ...]:
    """`hubs` with `hub` in place of the one of its name (appended if new); refused if that one has another
    host key: the hub may be an impostor, or was reinstalled, and only the operator can tell."""
    for old in hubs:
        if old.name == hub.name and old.ssh.host_key != hub.ssh.host_key:
            raise EnrollError(
                f"hub {hub.name} is in the inventory with host key {fingerprint(old.ssh.host_key)}, but "
                f"{hub.ssh.host} presents {fingerprint(hub.ssh.host_key)}: if the hub was reinstalled, "
                "remove it from the inventory first"
            )
    if any(old.name == hub.name for old in hubs):
        return tuple(hub if old.name == hub.name else old for old in hubs)
    return (*hubs, hub)


def _new_peer(
    found: HubPeer,
    address: IPAddress,
    hub: str,
    reading: HubReading,
    *,
    owners: Owners,
    deny: set[str],
    taken: set[str],
) -> PeerSpec:
    proposed = owners.name(found.public_key) or reading.conf_names.get(found.public_key) or ""
    name = node_name(proposed) or derived_name(address)
    if name in taken:
        name = node_name(f"{name}-{hub}") or derived_name(address)
    member = sorted(s for s, elements in reading.sets.items() if s not in deny and elements and address in elements)
    return PeerSpec(
        name=name,
        hub=hub,
        public_key=WireGuardKey(found.public_key),
        tunnel_ip=address,
        sets=tuple(member),
        owner=owners.owner(found.public_key, name),
    )


def interface_address(text: str, interface: str) -> tuple[IPAddress, IPNetwork]:
    """The hub's own tunnel address and network, from `ip -j addr show dev IF`."""
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") in ("inet", "inet6") and info.get("scope") != "link":
                iface = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
                return iface.ip, iface.network
    raise EnrollError(f"{interface} has no tunnel address; the inventory needs the hub's own")


def enforcing_table(sets: list[dict[str, Any]], table: str | None, deny_tables: Sequence[str]) -> str:
    """The nftables table that enforces, from `nft -j list sets`: the one asked for, else the deny sets'
    table, else the only table with sets, else `zerotrust` where there is one."""
    tables: list[str] = sorted({str(s["table"]) for s in sets})
    if table is not None:
        if table not in tables:
            raise EnrollError(
                f"no nftables table {table!r} with sets on the hub (tables with sets: {', '.join(tables) or 'none'})"
            )
        return table
    if len(set(deny_tables)) == 1:
        return deny_tables[0]
    if len(tables) == 1:
        return tables[0]
    if "zerotrust" in tables:
        return "zerotrust"
    raise EnrollError(f"which nftables table enforces? tables with sets: {', '.join(tables) or 'none'}; pass --table")


def set_addresses(listing: dict[str, Any]) -> frozenset[IPAddress]:
    """The single addresses in a set, from `nft -j list set` (plain or with a timeout)."""
    out: set[IPAddress] = set()
    for item in listing.get("nftables", []):
        for element in item.get("set", {}).get("elem", []):
            value = element["elem"]["val"] if isinstance(element, dict) and "elem" in element else element
            if isinstance(value, str):
                try:
                    out.add(ipaddress.ip_address(value))
                except ValueError:
                    continue
    return frozenset(out)


def diff(old: str, new: str, path: str) -> str:
    """A unified diff of two inventory texts ("" when they are the same)."""
    return "".join(
        difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path} (now)", f"{path} (enrolled)")
    )
