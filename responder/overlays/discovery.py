"""Peers found on the overlays themselves: a subject's risk reaches their tailnet devices without anyone
writing those devices into the inventory. A device counts when the overlay lists its WireGuard key, an
address and an owner that looks like an identity (an e-mail or UPN); the inventory's own entries win."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from responder.inventory import Inventory, PeerSpec
from responder.overlays.base import OverlayHub
from responder.overlays.errors import OverlayError

log = logging.getLogger(__name__)


async def discovered_peers(inventory: Inventory, overlays: Mapping[str, OverlayHub]) -> list[PeerSpec]:
    known = {(p.hub, str(p.public_key)) for p in inventory.peers}
    found: list[PeerSpec] = []
    for name, overlay in overlays.items():
        try:
            devices = await overlay.discover()
        except OverlayError as exc:
            log.warning("overlay %s: device discovery failed, only the inventory's devices are known: %s", name, exc)
            continue
        for n, device in enumerate(devices):
            if device.node_key is None or not device.addresses or not device.owner or "@" not in device.owner:
                continue
            if (name, str(device.node_key)) in known:
                continue
            found.append(
                PeerSpec(
                    name=f"{name}-d{n}",
                    hub=name,
                    public_key=device.node_key,
                    tunnel_ip=device.addresses[0],
                    owner=device.owner.lower(),
                    device=device.device_id,
                )
            )
        log.info("overlay %s: %d devices discovered", name, sum(1 for p in found if p.hub == name))
    return found


def with_peers(inventory: Inventory, peers: Sequence[PeerSpec]) -> Inventory:
    return inventory.model_copy(update={"peers": (*inventory.peers, *peers)}) if peers else inventory
