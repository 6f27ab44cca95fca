"""Tailscale API v2 (`https://api.tailscale.com/api/v2`).

Token: an API key (`tskey-api-…`) or an OAuth client (client-credentials grant, one-hour tokens renewed
before expiry); device actions need the `devices:core` scope. Devices are matched by `nodeKey`
(`nodekey:<hex>`, the WireGuard key) and `addresses`; the owner is the `user` login (email).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from responder.overlays.base import Json, Outcome, is_past, seg
from responder.overlays.errors import OverlayConfigError, UnsupportedAction
from responder.overlays.http import Credential, OAuthClientCredentials
from responder.overlays.inventory import CutOff, OverlayDevice, OverlayKind, parse_addresses, parse_node_key
from responder.overlays.tags import TaggedOverlay


class TailscaleOverlay(TaggedOverlay):
    kind = OverlayKind.TAILSCALE
    device_word = "device"

    def _credential(self, clock: Callable[[], float]) -> Credential:
        creds = self.spec.credentials
        if creds.oauth_client_id is not None and creds.oauth_client_secret is not None:
            return OAuthClientCredentials(
                f"{self.spec.base_url}/oauth/token",
                creds.oauth_client_id,
                creds.oauth_client_secret.load(self.name),
                self.settings.token_refresh_margin_s,
                clock,
            )
        if creds.token is None:
            raise OverlayConfigError(self.name, "tailscale needs credentials.token or an OAuth client")
        return super()._credential(clock)

    async def discover(self) -> list[OverlayDevice]:
        reply = await self.http.request("GET", f"/tailnet/{seg(self.spec.tailnet)}/devices", params={"fields": "all"})
        body = reply.body if isinstance(reply.body, dict) else {}
        return [self._device(d) for d in body.get("devices", []) if isinstance(d, dict)]

    def _device(self, d: Json) -> OverlayDevice:
        user = d.get("user") if isinstance(d.get("user"), str) else None
        return OverlayDevice(
            overlay=self.name,
            device_id=str(d.get("nodeId") or d.get("id")),
            name=str(d.get("name", "")),
            owner=user,
            owner_id=user,
            node_key=parse_node_key(d.get("nodeKey")),
            addresses=parse_addresses(d.get("addresses", [])),
            labels=tuple(str(t) for t in d.get("tags") or ()),
        )

    async def _get(self, device_id: str) -> Json | None:
        reply = await self.http.request("GET", f"/device/{seg(device_id)}", params={"fields": "all"}, missing_ok=True)
        return reply.body if reply.status != 404 and isinstance(reply.body, dict) else None

    async def _expire(self, device_id: str) -> Outcome:
        await self.http.request("POST", f"/device/{seg(device_id)}/expire")
        device = await self._get(device_id)
        verified = device is not None and is_past(device.get("expires"))
        return Outcome(verified, "node key expired: the device must re-authenticate" if verified
                       else "expire sent, but the device does not read back as expired")  # fmt: skip

    async def _set_authorized(self, device_id: str, authorized: bool) -> bool:
        await self.http.request("POST", f"/device/{seg(device_id)}/authorized", json_body={"authorized": authorized})
        device = await self._get(device_id)
        return device is not None and device.get("authorized") is authorized

    async def _cut_off(self, device: OverlayDevice, mode: CutOff) -> Outcome:
        restore: dict[str, Any] = {"cut_off": mode.value, "device_id": device.device_id, "owner_id": device.owner_id}
        if mode is CutOff.EXPIRE_KEY:
            outcome = await self._expire(device.device_id)
            return Outcome(outcome.verified, outcome.detail, restore)
        if mode is CutOff.DEAUTHORIZE:
            verified = await self._set_authorized(device.device_id, False)
            return Outcome(verified, "deauthorized" if verified else "deauthorize sent, not read back", restore)
        reply = await self.http.request("DELETE", f"/device/{seg(device.device_id)}", missing_ok=True)
        verified = await self._get(device.device_id) is None
        detail = "already deleted (404)" if reply.status == 404 else "device deleted"
        return Outcome(verified, detail if verified else f"{detail}, but it still reads back", restore)

    async def _restore_access(self, restore: dict[str, Any]) -> Outcome:
        if restore.get("cut_off") != CutOff.DEAUTHORIZE.value:
            raise UnsupportedAction(
                self.name, f"{restore.get('cut_off')} cannot be undone on tailscale: the device must sign in again"
            )
        verified = await self._set_authorized(str(restore["device_id"]), True)
        return Outcome(verified, "authorized again" if verified else "authorize sent, not read back")

    async def _force_reauth(self, device: OverlayDevice) -> Outcome:
        return await self._expire(device.device_id)

    def _tags_path(self, device_id: str) -> str:
        return f"/device/{seg(device_id)}/tags"
