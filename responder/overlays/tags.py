"""Overlays whose devices carry a tag list that one request replaces whole (Tailscale, Headscale): the
quarantine and set labels are tags, added or removed by guarded read-modify-write."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from responder.overlays.base import Json, Outcome, OverlayHub
from responder.overlays.errors import OverlayNotFound


class TaggedOverlay(OverlayHub):
    """Implements `_set_label` over `_get` (one device, None when gone) and `_tags_path` (where the whole
    tag list is POSTed)."""

    device_word: ClassVar[str]
    """What the API calls a device ("device", "node"), in messages."""

    @abstractmethod
    async def _get(self, device_id: str) -> Json | None: ...

    @abstractmethod
    def _tags_path(self, device_id: str) -> str: ...

    async def _tags(self, device_id: str) -> Json:
        device = await self._get(device_id)
        if device is None:
            raise OverlayNotFound(self.name, f"{self.device_word} {device_id} is gone")
        return {"tags": sorted(str(t) for t in device.get("tags") or ())}

    async def _set_label(self, device_id: str, owner_id: str | None, label: str, present: bool) -> Outcome:
        def modify(current: Json) -> Json | None:
            tags: list[str] = current["tags"]
            if (label in tags) == present:
                return None
            return {"tags": sorted({*tags, label} if present else set(tags) - {label})}

        # The POST replaces the whole list: hence the guarded read-modify-write.
        before, wrote, after = await self.replace(
            f"tags of {self.device_word} {device_id}", "POST", self._tags_path(device_id),
            lambda: self._tags(device_id), modify,
        )  # fmt: skip
        verified = (label in after["tags"]) == present
        verb = "tagged" if present else "untagged"
        detail = f"{verb} {label}" if wrote else f"already {verb} {label}"
        restore = {"device_id": device_id, "owner_id": owner_id, "label": label, "was_present": label in before["tags"]}
        return Outcome(verified, detail if verified else f"{detail}, not read back", restore)
