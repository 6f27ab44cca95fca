"""NetBird management API (`https://api.netbird.io` or self-hosted), `Authorization: Token nbp_…` (PAT).

The API does not list peers' WireGuard keys, so peers are matched by tunnel address (`ip`); the owner is the
peer's user (email from `/api/users`). Every PUT replaces the whole object, so users and groups are changed
by guarded read-modify-write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from responder.overlays.base import Json, Outcome, OverlayHub, seg
from responder.overlays.errors import OverlayConfigError, OverlayNotFound, UnsupportedAction
from responder.overlays.http import Credential, StaticToken
from responder.overlays.inventory import CutOff, OverlayDevice, OverlayKind, parse_addresses

_USER_FIELDS = ("role", "auto_groups", "is_blocked")  # what PUT /api/users/{id} requires, and all it takes


class NetBirdOverlay(OverlayHub):
    kind = OverlayKind.NETBIRD
    lists_keys = False

    def _credential(self, clock: Callable[[], float]) -> Credential:
        token = self.spec.credentials.token
        if token is None:
            raise OverlayConfigError(self.name, "netbird needs credentials.token (a personal access token)")
        return StaticToken("Token", token.load(self.name))

    async def _users(self) -> list[Json]:
        reply = await self.http.request("GET", "/api/users")
        return [u for u in reply.body or [] if isinstance(u, dict)]

    async def discover(self) -> list[OverlayDevice]:
        emails = {str(u.get("id")): u.get("email") for u in await self._users()}
        reply = await self.http.request("GET", "/api/peers")
        devices = []
        for p in reply.body or []:
            if not isinstance(p, dict):
                continue
            user_id = str(p["user_id"]) if p.get("user_id") else None
            email = emails.get(user_id or "")
            devices.append(
                OverlayDevice(
                    overlay=self.name,
                    device_id=str(p.get("id")),
                    name=str(p.get("name", "")),
                    owner=str(email) if email else None,
                    owner_id=user_id,
                    node_key=None,
                    addresses=parse_addresses(p.get("ip")),
                    labels=tuple(str(g.get("id")) for g in p.get("groups") or () if isinstance(g, dict)),
                )
            )
        return devices

    async def _peer(self, peer_id: str) -> Json | None:
        reply = await self.http.request("GET", f"/api/peers/{seg(peer_id)}", missing_ok=True)
        return reply.body if reply.status != 404 and isinstance(reply.body, dict) else None

    async def _user(self, user_id: str) -> Json:
        for user in await self._users():
            if str(user.get("id")) == user_id:
                return {k: user.get(k) for k in _USER_FIELDS}
        raise OverlayNotFound(self.name, f"user {user_id} not found")

    async def _set_blocked(self, user_id: str, blocked: bool) -> tuple[bool, bool]:
        """Block/unblock the user; returns (was_blocked, verified)."""

        def modify(current: Json) -> Json | None:
            return None if current["is_blocked"] is blocked else {**current, "is_blocked": blocked}

        path = f"/api/users/{seg(user_id)}"
        before, _, after = await self.replace(f"user {user_id}", "PUT", path, lambda: self._user(user_id), modify)
        return bool(before["is_blocked"]), after["is_blocked"] is blocked

    async def _delete(self, peer_id: str) -> Outcome:
        reply = await self.http.request("DELETE", f"/api/peers/{seg(peer_id)}", missing_ok=True)
        verified = await self._peer(peer_id) is None
        detail = "already deleted (404)" if reply.status == 404 else "peer deleted"
        return Outcome(verified, detail if verified else f"{detail}, but it still reads back")

    async def _cut_off(self, device: OverlayDevice, mode: CutOff) -> Outcome:
        restore: dict[str, Any] = {"cut_off": mode.value, "device_id": device.device_id, "owner_id": device.owner_id}
        if mode is CutOff.DELETE_DEVICE:
            outcome = await self._delete(device.device_id)
            return Outcome(outcome.verified, outcome.detail, restore)
        if device.owner_id is None:
            raise UnsupportedAction(
                self.name, f"peer {device.device_id} has no user (setup-key peer): use cut_off delete_device"
            )
        was_blocked, verified = await self._set_blocked(device.owner_id, True)
        peer = await self._peer(device.device_id)
        # Blocking expires every peer of the user; the peer reading back as login_expired proves it reached it.
        verified = verified and (peer is None or peer.get("login_expired") is True)
        restore["was_blocked"] = was_blocked
        detail = "user already blocked" if was_blocked else f"user {device.owner_id} blocked: all their peers expired"
        return Outcome(verified, detail if verified else f"{detail}, not read back", restore)

    async def _restore_access(self, restore: dict[str, Any]) -> Outcome:
        if restore.get("cut_off") != CutOff.BLOCK_USER.value:
            raise UnsupportedAction(self.name, "a deleted peer cannot be restored: it must register again")
        if restore.get("was_blocked"):
            return Outcome(True, "the user was blocked before the action: left blocked")
        _, verified = await self._set_blocked(str(restore["owner_id"]), False)
        return Outcome(verified, "user unblocked (peers log in again)" if verified else "unblock not read back")

    async def _force_reauth(self, device: OverlayDevice) -> Outcome:
        # NetBird has no per-peer expire: deleting the peer is what forces a new registration with a new key.
        return await self._delete(device.device_id)

    async def _group(self, group_id: str) -> Json:
        reply = await self.http.request("GET", f"/api/groups/{seg(group_id)}")
        group = reply.body if isinstance(reply.body, dict) else {}
        peers = sorted(str(p.get("id") if isinstance(p, dict) else p) for p in group.get("peers") or ())
        out: Json = {"name": group.get("name"), "peers": peers}
        if "resources" in group:
            out["resources"] = group["resources"]
        return out

    async def _set_label(self, device_id: str, owner_id: str | None, label: str, present: bool) -> Outcome:
        def modify(current: Json) -> Json | None:
            peers: list[str] = current["peers"]
            if (device_id in peers) == present:
                return None
            return {**current, "peers": sorted({*peers, device_id} if present else set(peers) - {device_id})}

        async def write(new: Json) -> None:
            # PUT /api/groups/{id} replaces the member list: hence the guarded read-modify-write.
            await self.http.request("PUT", f"/api/groups/{seg(label)}", json_body=new)

        before, wrote = await self.read_modify_write(f"group {label}", lambda: self._group(label), modify, write)
        peer = await self._peer(device_id)
        groups = {str(g.get("id")) for g in (peer or {}).get("groups") or () if isinstance(g, dict)}
        verified = peer is not None and (label in groups) == present
        verb = "added to" if present else "removed from"
        detail = f"{verb} group {label}" if wrote else f"already {verb} group {label}"
        restore = {
            "device_id": device_id,
            "owner_id": owner_id,
            "label": label,
            "was_present": device_id in before["peers"],
        }
        return Outcome(verified, detail if verified else f"{detail}, not read back", restore)
