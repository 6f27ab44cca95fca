"""The inventory: which hubs exist, how to reach them, and which peers (devices) live on them.

Written by `responder lab up` for the lab, or by the user for a real network. Host keys are always
pinned: there is no field to turn verification off.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from responder.core.identifiers import (
    InterfaceName,
    IPAddress,
    IPNetwork,
    NftName,
    NodeName,
    WireGuardKey,
)
from responder.overlays.inventory import OverlaySpec


class InventoryError(Exception):
    """The inventory file cannot be read or does not validate; the message says where and why."""


class HubMode(StrEnum):
    AGENTLESS = "agentless"
    AGENT = "agent"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SshEndpoint(_Model):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    host_key: str = Field(description="The hub's pinned OpenSSH public host key line")
    client_key: Path
    netns: Path | None = Field(
        default=None,
        description="Open the connection from this network namespace (the lab's management node)",
    )

    @field_validator("host_key")
    @classmethod
    def _host_key_is_public_key(cls, value: str) -> str:
        parts = value.split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
            raise ValueError("host_key must be an OpenSSH public key line, e.g. 'ssh-ed25519 AAAA...'")
        return " ".join(parts[:2])


class HubSpec(_Model):
    name: NodeName
    ssh: SshEndpoint
    mode: HubMode = HubMode.AGENTLESS
    sudo: bool = False
    interface: InterfaceName = "wg0"
    table: NftName = "zerotrust"
    tunnel_network: IPNetwork
    address: IPAddress = Field(description="The hub's own tunnel address")

    @model_validator(mode="after")
    def _address_in_network(self) -> Self:
        if self.address not in self.tunnel_network:
            raise ValueError(f"address {self.address} is outside tunnel_network {self.tunnel_network}")
        return self


class PeerSpec(_Model):
    name: NodeName
    hub: NodeName
    public_key: WireGuardKey
    tunnel_ip: IPAddress
    sets: tuple[NftName, ...] = ()
    owner: str | None = Field(default=None, description="The identity that owns the device (email/UPN)")
    device: str | None = Field(default=None, description="The IdP's device id, where known")


class Inventory(_Model):
    hubs: tuple[HubSpec, ...]
    overlays: tuple[OverlaySpec, ...] = Field(
        default=(), description="Managed overlays (Tailscale, Headscale, NetBird, DefGuard) acting as hubs"
    )
    peers: tuple[PeerSpec, ...] = ()
    management_addresses: tuple[IPAddress, ...] = Field(
        default=(), description="Addresses the responder manages hubs from; never a target"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        hubs = {h.name: h for h in self.hubs}
        if len(hubs) != len(self.hubs):
            raise ValueError("hub names must be unique")
        overlays = {o.name for o in self.overlays}
        if len(overlays) != len(self.overlays) or overlays & set(hubs):
            raise ValueError("overlay names must be unique and differ from hub names")
        seen_keys: set[tuple[str, str]] = set()
        seen_ips: set[tuple[str, IPAddress]] = set()
        for peer in self.peers:
            hub = hubs.get(peer.hub)
            if hub is None and peer.hub in overlays:
                continue  # the overlay assigns its own addresses
            if hub is None:
                raise ValueError(f"peer {peer.name!r} names unknown hub {peer.hub!r}")
            if peer.tunnel_ip not in hub.tunnel_network:
                raise ValueError(
                    f"peer {peer.name!r}: tunnel_ip {peer.tunnel_ip} is outside "
                    f"{hub.name}'s tunnel_network {hub.tunnel_network}"
                )
            if (peer.hub, str(peer.public_key)) in seen_keys:
                raise ValueError(f"peer {peer.name!r}: public key already used on {peer.hub}")
            if (peer.hub, peer.tunnel_ip) in seen_ips:
                raise ValueError(f"peer {peer.name!r}: tunnel_ip {peer.tunnel_ip} already used")
            seen_keys.add((peer.hub, str(peer.public_key)))
            seen_ips.add((peer.hub, peer.tunnel_ip))
        return self

    def hub(self, name: str) -> HubSpec:
        for hub in self.hubs:
            if hub.name == name:
                return hub
        raise KeyError(f"no hub named {name!r} in the inventory")

    @property
    def overlay_names(self) -> frozenset[str]:
        return frozenset(o.name for o in self.overlays)

    def peers_on(self, hub: str) -> tuple[PeerSpec, ...]:
        return tuple(p for p in self.peers if p.hub == hub)

    def allowed_ips(self, hub: str) -> dict[str, list[str]]:
        """The hub's peers' tunnel addresses by key: what a removed peer is put back with when the record of
        its removal was lost with the answer."""
        return {str(p.public_key): [f"{p.tunnel_ip}/{p.tunnel_ip.max_prefixlen}"] for p in self.peers_on(hub)}

    def peer_by_ip(self, address: IPAddress) -> tuple[PeerSpec, ...]:
        return tuple(p for p in self.peers if p.tunnel_ip == address)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def load(cls, path: Path) -> Inventory:
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
        except OSError as exc:
            raise InventoryError(f"{path}: cannot read inventory: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise InventoryError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            raise InventoryError(f"{path}:{line}:{column}: not valid YAML: {exc.problem}") from exc
        except yaml.YAMLError as exc:
            raise InventoryError(f"{path}: not valid YAML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InventoryError("\n".join(_problems(path, text, exc))) from exc


def _problems(path: Path, text: str, exc: ValidationError) -> list[str]:
    """One line per error: `FILE:LINE:COL: field: problem` (the position of the field, or of the
    nearest enclosing one that is in the file)."""
    # Only on this error path: the positions reader comes with the rule loader, slow to import.
    from responder.policy.yamlpos import YamlError, load_with_positions, position  # noqa: PLC0415

    try:
        _, positions = load_with_positions(text, str(path))
    except YamlError:
        positions = {}
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        line, column = position(positions, loc)
        field = ".".join(map(str, loc)) or "(top level)"
        out.append(f"{path}:{line}:{column}: invalid inventory: {field}: {err['msg']}")
    return out
