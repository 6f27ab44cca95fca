"""Headscale `/api/v1` (v0.23 to v0.29), REST via grpc-gateway, `Authorization: Bearer <api key>`.

Nodes are matched by `nodeKey` (`nodekey:<hex>`) and `ipAddresses`; the owner is the node's user (email
where the user has one, else the user name). Headscale has no deauthorize: a node is expired or deleted.
"""

from __future__ import annotations

from typing import Any

from responder.overlays.base import Json, Outcome, is_past, seg
from responder.overlays.errors import UnsupportedAction
from responder.overlays.inventory import CutOff, OverlayDevice, OverlayKind, parse_addresses, parse_node_key
from responder.overlays.tags import TaggedOverlay


class HeadscaleOverlay(TaggedOverlay):
    kind = OverlayKind.HEADSCALE
    device_word = "node"

    async def discover(self) -> list[OverlayDevice]:
        reply = await self.http.request("GET", "/api/v1/node")
        body = reply.body if isinstance(reply.body, dict) else {}
        return [self._device(n) for n in body.get("nodes", []) if isinstance(n, dict)]

    def _device(self, n: Json) -> OverlayDevice:
        raw_user = n.get("user")
        user: Json = raw_user if isinstance(raw_user, dict) else {}
        user_name = str(user["name"]) if user.get("name") else None
        return OverlayDevice(
            overlay=self.name,
            device_id=str(n.get("id")),
            name=str(n.get("givenName") or n.get("name") or ""),
            owner=str(user.get("email") or user_name) if (user.get("email") or user_name) else None,
            owner_id=user_name,
            node_key=parse_node_key(n.get("nodeKey")),
            addresses=parse_addresses(n.get("ipAddresses", [])),
            labels=tuple(str(t) for t in n.get("tags") or ()),
        )

    async def _get(self, node_id: str) -> Json | None:
        reply = await self.http.request("GET", f"/api/v1/node/{seg(node_id)}", missing_ok=True)
        if reply.status == 404 or not isinstance(reply.body, dict):
            return None
        node = reply.body.get("node")
        return node if isinstance(node, dict) else None

    async def _expire(self, node_id: str) -> Outcome:
        await self.http.request("POST", f"/api/v1/node/{seg(node_id)}/expire")
        node = await self._get(node_id)
        verified = node is not None and is_past(node.get("expiry"))
        return Outcome(verified, "node expired: it must log in again" if verified
                       else "expire sent, but the node does not read back as expired")  # fmt: skip

    async def _cut_off(self, device: OverlayDevice, mode: CutOff) -> Outcome:
        restore: dict[str, Any] = {"cut_off": mode.value, "device_id": device.device_id, "owner_id": device.owner_id}
        if mode is CutOff.EXPIRE_KEY:
            outcome = await self._expire(device.device_id)
            return Outcome(outcome.verified, outcome.detail, restore)
        # Before v0.27 a missing node may answer 500 rather than 404; that is retried and then reported.
        reply = await self.http.request("DELETE", f"/api/v1/node/{seg(device.device_id)}", missing_ok=True)
        verified = await self._get(device.device_id) is None
        detail = "already deleted (404)" if reply.status == 404 else "node deleted"
        return Outcome(verified, detail if verified else f"{detail}, but it still reads back", restore)

    async def _restore_access(self, restore: dict[str, Any]) -> Outcome:
        raise UnsupportedAction(
            self.name, f"{restore.get('cut_off')} cannot be undone on headscale: the node must log in again"
        )

    async def _force_reauth(self, device: OverlayDevice) -> Outcome:
        return await self._expire(device.device_id)

    def _tags_path(self, device_id: str) -> str:
        return f"/api/v1/node/{seg(device_id)}/tags"
