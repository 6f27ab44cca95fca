"""Identity resolution: whom an event is about, and where that identity can be enforced.

Risk accrues to one subject per person: an Okta login, an Entra UPN and a tunnel IP in a SIEM alert
that belong to the same owner are one `user:` subject. What has no owner keeps its own key.
"""

from __future__ import annotations

from dataclasses import dataclass

from responder.core.events import Subjects
from responder.core.identifiers import IPAddress, address_text
from responder.inventory import Inventory, PeerSpec


@dataclass(frozen=True, slots=True)
class SubjectView:
    key: str
    kind: str  # user | peer | device | key | ip
    peers: tuple[PeerSpec, ...]

    @property
    def name(self) -> str:
        """The key without its kind: the login of a `user:`, the id of a `device:`, the text of a `key:`."""
        return self.key.partition(":")[2]

    @property
    def sets(self) -> frozenset[str]:
        return frozenset(s for p in self.peers for s in p.sets)

    def view(self) -> dict[str, object]:
        return {
            "key": self.key,
            "kind": self.kind,
            "peers": [p.name for p in self.peers],
            "hubs": sorted({p.hub for p in self.peers}),
            "sets": sorted(self.sets),
        }


class IdentityMap:
    def __init__(self, inventory: Inventory | None) -> None:
        self._by_owner: dict[str, list[PeerSpec]] = {}
        self._by_device: dict[str, list[PeerSpec]] = {}
        self._by_key: dict[str, list[PeerSpec]] = {}
        self._by_ip: dict[IPAddress, list[PeerSpec]] = {}
        self._by_name: dict[str, list[PeerSpec]] = {}
        self.hub_addresses: frozenset[IPAddress] = frozenset()
        self.management: frozenset[IPAddress] = frozenset()
        self.overlays: frozenset[str] = frozenset()
        self._device_keys: dict[str, str] = {}
        self._key_keys: dict[str, str] = {}
        self._ip_keys: dict[IPAddress, str] = {}
        self._views: dict[str, SubjectView] = {}
        if inventory is None:
            return
        self.overlays = inventory.overlay_names
        for peer in inventory.peers:
            if peer.owner:
                self._by_owner.setdefault(peer.owner.lower(), []).append(peer)
            self._by_device.setdefault(peer.device or peer.name, []).append(peer)
            self._by_key.setdefault(str(peer.public_key), []).append(peer)
            self._by_ip.setdefault(peer.tunnel_ip, []).append(peer)
            self._by_name.setdefault(peer.name, []).append(peer)
        self.hub_addresses = frozenset(h.address for h in inventory.hubs)
        self.management = frozenset(inventory.management_addresses)
        # The inventory does not change under a map: resolve each device, key and address once.
        self._device_keys = {d: self._owner_or(p, "device", d) for d, p in self._by_device.items()}
        self._key_keys = {k: self._owner_or(p, "key", k) for k, p in self._by_key.items()}
        self._ip_keys = {a: self._owner_or(p, "ip", a) for a, p in self._by_ip.items()}

    @staticmethod
    def _owner_or(peers: list[PeerSpec] | None, kind: str, value: object) -> str:
        if peers:
            owners = {p.owner.lower() for p in peers if p.owner}
            if len(owners) == 1:
                return f"user:{owners.pop()}"
            return f"peer:{peers[0].name}"
        return f"{kind}:{value}"

    def resolve(self, subjects: Subjects) -> tuple[str, ...]:
        """The subject keys an event names, each person once, in a stable order."""
        keys: list[str] = [f"user:{u}" for u in subjects.users]
        if subjects.devices:
            keys += [self._device_keys.get(d) or f"device:{d}" for d in subjects.devices]
        if subjects.keys:
            keys += [self._key_keys.get(k) or f"key:{k}" for k in subjects.keys]
        if subjects.addresses:
            keys += [self._ip_keys.get(a) or f"ip:{address_text(a)}" for a in subjects.addresses]
        return tuple(dict.fromkeys(keys)) if len(keys) > 1 else tuple(keys)

    def names(self, key: str) -> tuple[str, ...]:
        """What events about the subject `key` may name first (a login, device, key or tunnel address, as
        the journal files them): its own name, and its peers' devices, keys and addresses."""
        view = self.subject(key)
        names = [view.name]
        for peer in view.peers:
            names += [peer.device or peer.name, str(peer.public_key), address_text(peer.tunnel_ip)]
        return tuple(dict.fromkeys(names))

    def subject(self, key: str) -> SubjectView:
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = self._view(key)
            if len(self._views) > 100_000:  # subjects come from events: bound what is kept
                self._views.clear()
        return view

    def _view(self, key: str) -> SubjectView:
        kind, _, value = key.partition(":")
        peers: list[PeerSpec] = []
        if kind == "user":
            peers = self._by_owner.get(value, [])
        elif kind == "peer":
            peers = self._by_name.get(value, [])
        elif kind == "device":
            peers = self._by_device.get(value, [])
        elif kind == "key":
            peers = self._by_key.get(value, [])
        return SubjectView(key, kind, tuple(peers))
