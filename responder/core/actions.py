"""Enforcement actions with concrete targets: what the decision point asks a hub to do.

An `Action` names one hub and exactly the target its type needs; it is data, built by the decision
point from the inventory and executed (and verified, and undone) by the enforcement point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address

from responder.core.identifiers import IPAddress, WireGuardKey


class ActionType(StrEnum):
    QUARANTINE = "quarantine"
    """Add the address to a deny set (checked before established flows) with a kernel timeout."""
    DELETE_ELEMENT = "delete_element"
    """Delete the address from a tier set (e.g. admin_devices): it loses what that tier grants."""
    ADD_ELEMENT = "add_element"
    """Add the address to a set (the undo of delete_element, or an allow-listing)."""
    REMOVE_PEER = "remove_peer"
    """Remove the WireGuard peer from the hub: its tunnel stops at once."""
    KILL_FLOWS = "kill_flows"
    """Delete the conntrack entries of the address in both directions, so open sessions die."""
    ROTATE_KEY = "rotate_key"
    """Revoke the peer's public key for good; the device must re-enroll with a new key. Irreversible."""


REVERSIBLE: frozenset[ActionType] = frozenset(
    {ActionType.QUARANTINE, ActionType.DELETE_ELEMENT, ActionType.ADD_ELEMENT, ActionType.REMOVE_PEER}
)

_SET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_HUB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_NEEDS_SET = frozenset({ActionType.QUARANTINE, ActionType.DELETE_ELEMENT, ActionType.ADD_ELEMENT})
_NEEDS_KEY = frozenset({ActionType.REMOVE_PEER, ActionType.ROTATE_KEY})


@dataclass(frozen=True, slots=True)
class Action:
    type: ActionType
    hub: str
    address: IPAddress | None = None
    set_name: str | None = None
    peer_key: WireGuardKey | None = None
    ttl_s: int | None = None

    def __post_init__(self) -> None:
        if self.type in _NEEDS_SET and (self.set_name is None or self.address is None):
            raise ValueError(f"{self.type} needs set_name and address")
        if self.type is ActionType.KILL_FLOWS and self.address is None:
            raise ValueError("kill_flows needs an address")
        if self.type in _NEEDS_KEY and self.peer_key is None:
            raise ValueError(f"{self.type} needs peer_key")
        if self.ttl_s is not None and not 0 < self.ttl_s < 2**31:
            raise ValueError("ttl_s must be a positive number of seconds")
        if self.set_name is not None and not _SET_NAME.fullmatch(self.set_name):
            raise ValueError(f"invalid set name {self.set_name!r}")
        if not _HUB_NAME.fullmatch(self.hub):
            raise ValueError(f"invalid hub name {self.hub!r}")
        if self.address is not None and not isinstance(self.address, IPv4Address | IPv6Address):
            raise ValueError("address must be an ipaddress object")
        if isinstance(self.address, IPv6Address) and self.address.scope_id is not None:
            raise ValueError("scoped IPv6 addresses are not accepted")
        if self.peer_key is not None and not isinstance(self.peer_key, WireGuardKey):
            raise ValueError("peer_key must be a WireGuardKey")

    @property
    def reversible(self) -> bool:
        return self.type in REVERSIBLE

    def describe(self) -> str:
        target = self.peer_key or f"{self.set_name or ''} {self.address or ''}".strip()
        ttl = f" for {self.ttl_s}s" if self.ttl_s else ""
        return f"{self.type} {target} on {self.hub}{ttl}"
