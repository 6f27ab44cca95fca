"""DefGuard core (v2.0) `/api/v1`: `Authorization: Bearer <token>` with a Business licence, otherwise a session
cookie from `POST /api/v1/auth` (credentials.username/password).

Devices are matched by `wireguard_pubkey`; the owner is the device's user (email; `username` is the id the
API takes). Disabling a user is a full-replace `PUT /api/v1/user/{username}` of the whole UserInfo, so it is
a guarded read-modify-write; quarantine is a user group (user-wide) where one is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from responder.overlays.base import Json, Outcome, OverlayHub, seg
from responder.overlays.errors import OverlayNotFound, UnsupportedAction
from responder.overlays.http import Credential, SessionLogin
from responder.overlays.inventory import CutOff, OverlayDevice, OverlayKind, parse_addresses, parse_node_key


class DefGuardOverlay(OverlayHub):
    kind = OverlayKind.DEFGUARD

    def _credential(self, clock: Callable[[], float]) -> Credential:
        creds = self.spec.credentials
        if creds.username is not None and creds.password is not None:
            return SessionLogin("/api/v1/auth", creds.username, creds.password.load(self.name))
        return super()._credential(clock)

    async def discover(self) -> list[OverlayDevice]:
        users = (await self.http.request("GET", "/api/v1/user")).body or []
        by_id = {str(u.get("id")): u for u in users if isinstance(u, dict)}
        devices = (await self.http.request("GET", "/api/v1/device")).body or []
        out = []
        for d in devices:
            if not isinstance(d, dict):
                continue
            user = by_id.get(str(d.get("user_id")), {})
            out.append(
                OverlayDevice(
                    overlay=self.name,
                    device_id=str(d.get("id")),
                    name=str(d.get("name", "")),
                    owner=str(user["email"]) if user.get("email") else None,
                    owner_id=str(user["username"]) if user.get("username") else None,
                    node_key=parse_node_key(d.get("wireguard_pubkey")),
                    addresses=parse_addresses(d.get("wireguard_ips", [])),
                    labels=tuple(str(g) for g in user.get("groups") or ()),
                )
            )
        return out

    async def _user(self, username: str) -> Json:
        body = (await self.http.request("GET", f"/api/v1/user/{seg(username)}")).body
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, dict):
            raise OverlayNotFound(self.name, f"user {username}: no UserInfo in the answer")
        return user

    async def _update_user(self, username: str, change: Callable[[Json], Json | None]) -> tuple[Json, bool, Json]:
        """Guarded full-replace of the UserInfo; returns (before, wrote, read back)."""
        # The PUT takes the whole UserInfo: omitted groups or apps would be removed from the user.
        path = f"/api/v1/user/{seg(username)}"
        return await self.replace(f"user {username}", "PUT", path, lambda: self._user(username), change)

    async def _set_active(self, username: str, active: bool) -> tuple[bool, bool]:
        """Enable/disable the user; returns (was_active, verified)."""
        before, _, after = await self._update_user(
            username, lambda u: None if u.get("is_active") is active else {**u, "is_active": active}
        )
        return bool(before.get("is_active")), after.get("is_active") is active

    async def _delete(self, device_id: str) -> Outcome:
        reply = await self.http.request("DELETE", f"/api/v1/device/{seg(device_id)}", missing_ok=True)
        gone = await self.http.request("GET", f"/api/v1/device/{seg(device_id)}", missing_ok=True)
        verified = gone.status == 404
        detail = "already deleted (404)" if reply.status == 404 else "device deleted: it must enroll a new key"
        return Outcome(verified, detail if verified else f"{detail}, but it still reads back")

    async def _cut_off(self, device: OverlayDevice, mode: CutOff) -> Outcome:
        restore: dict[str, Any] = {"cut_off": mode.value, "device_id": device.device_id, "owner_id": device.owner_id}
        if mode is CutOff.DELETE_DEVICE:
            outcome = await self._delete(device.device_id)
            return Outcome(outcome.verified, outcome.detail, restore)
        if device.owner_id is None:
            raise UnsupportedAction(self.name, f"device {device.device_id} has no user: use cut_off delete_device")
        was_active, verified = await self._set_active(device.owner_id, False)
        restore["was_active"] = was_active
        detail = (f"user {device.owner_id} disabled: sessions logged out, gateways updated" if was_active
                  else "user already disabled")  # fmt: skip
        return Outcome(verified, detail if verified else f"{detail}, not read back", restore)

    async def _restore_access(self, restore: dict[str, Any]) -> Outcome:
        if restore.get("cut_off") != CutOff.BLOCK_USER.value:
            raise UnsupportedAction(self.name, "a deleted device cannot be restored: it must enroll again")
        if not restore.get("was_active"):
            return Outcome(True, "the user was disabled before the action: left disabled")
        _, verified = await self._set_active(str(restore["owner_id"]), True)
        return Outcome(verified, "user enabled again" if verified else "enable not read back")

    async def _force_reauth(self, device: OverlayDevice) -> Outcome:
        # The responder cannot choose the device's new key; deleting the device makes it enroll one.
        return await self._delete(device.device_id)

    async def _set_label(self, device_id: str, owner_id: str | None, label: str, present: bool) -> Outcome:
        if owner_id is None:
            raise UnsupportedAction(self.name, f"device {device_id} has no user to put in group {label}")

        def change(user: Json) -> Json | None:
            groups = [str(g) for g in user.get("groups") or ()]
            if (label in groups) == present:
                return None
            return {**user, "groups": [*groups, label] if present else [g for g in groups if g != label]}

        before, wrote, after = await self._update_user(owner_id, change)
        verified = (label in (after.get("groups") or ())) == present
        verb = "added to" if present else "removed from"
        detail = f"user {owner_id} {verb} group {label}" if wrote else f"user {owner_id} already {verb} group {label}"
        restore = {"device_id": device_id, "owner_id": owner_id, "label": label,
                   "was_present": label in (before.get("groups") or ())}  # fmt: skip
        return Outcome(verified, detail if verified else f"{detail}, not read back", restore)
