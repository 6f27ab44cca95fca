"""An overlay's admin API as an enforcement point, behind the same `Hub` protocol as the SSH hubs.

The shared part lives here: finding the device an action means, turning each `ActionType` into the overlay's
primitive (cut off, force re-authentication, add/remove a tag or group), results and undo, and the guarded
read-modify-write that the full-replace APIs need. Each overlay module supplies the primitives.

What an action means on an overlay:
- remove_peer: cut the device off in the overlay's configured way (`OverlaySpec.cut_off`).
- rotate_key: force re-authentication (expire the node key, or delete the device where that is the only way).
- quarantine: add the quarantine tag/group (the ACL policy must deny it). There is no kernel timeout:
  `ttl_s` is not enforced by the overlay; the quarantine lasts until it is undone.
- add_element / delete_element: add / remove the tag or group mapped to the hub set (`actions.set_labels`).
- kill_flows: not supported; an overlay has no flow table the responder can reach.
"""

from __future__ import annotations

import copy
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

from responder.core.actions import Action, ActionType
from responder.overlays.errors import (
    ConcurrentModification,
    OverlayConfigError,
    OverlayError,
    OverlayNotFound,
    UnsupportedAction,
)
from responder.overlays.http import Credential, HttpSettings, OverlayHttp, StaticToken
from responder.overlays.inventory import CutOff, OverlayDevice, OverlayKind, OverlaySpec, devices_by_owner
from responder.pep.hub import ActionResult

log = logging.getLogger(__name__)

_GONE_IS_DONE = frozenset({ActionType.REMOVE_PEER, ActionType.ROTATE_KEY, ActionType.DELETE_ELEMENT})
_LABEL_ACTIONS = frozenset({ActionType.QUARANTINE, ActionType.ADD_ELEMENT, ActionType.DELETE_ELEMENT})

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an overlay primitive did: read back (verified) or not, and what undo needs."""

    verified: bool
    detail: str
    restore: dict[str, Any] | None = None


def seg(value: str) -> str:
    """One path segment: ids come from the API, but a '/' or '..' in one must not change the endpoint."""
    return quote(value, safe="")


def is_past(value: object) -> bool:
    """True if an RFC 3339 timestamp (`expires`, `expiry`) lies in the past, i.e. the key has expired."""
    if not isinstance(value, str) or not value:
        return False
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Some APIs report "never expires" as the zero time; that is not an expiry.
    return moment.year > 1 and moment <= datetime.now(UTC)


class OverlayHub(ABC):
    """Implements `responder.pep.hub.Hub` for one overlay endpoint; one HTTP session, closed by `close()`."""

    kind: ClassVar[OverlayKind]
    lists_keys: ClassVar[bool] = True
    """Whether the device listing carries WireGuard keys; if not, actions must give the tunnel address."""

    def __init__(
        self, spec: OverlaySpec, settings: HttpSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if spec.kind is not self.kind:
            raise OverlayConfigError(spec.name, f"spec is for {spec.kind}, adapter is for {self.kind}")
        self.spec = spec
        self.name: str = spec.name
        self.settings = settings or HttpSettings()
        self.http = OverlayHttp(spec.name, spec.base_url, self._credential(clock), self.settings)

    # -- what each overlay supplies -------------------------------------------------------------------------

    def _credential(self, clock: Callable[[], float]) -> Credential:
        token = self.spec.credentials.token
        if token is None:
            raise OverlayConfigError(self.name, f"{self.kind} needs credentials.token")
        return StaticToken("Bearer", token.load(self.name))

    @abstractmethod
    async def discover(self) -> list[OverlayDevice]:
        """Every device on the overlay, mapped to its owner's identity (email/login) and WireGuard key."""

    @abstractmethod
    async def _cut_off(self, device: OverlayDevice, mode: CutOff) -> Outcome: ...

    @abstractmethod
    async def _restore_access(self, restore: dict[str, Any]) -> Outcome:
        """Undo a cut-off from its restore record, or raise `UnsupportedAction` if that mode is final."""

    @abstractmethod
    async def _force_reauth(self, device: OverlayDevice) -> Outcome: ...

    @abstractmethod
    async def _set_label(self, device_id: str, owner_id: str | None, label: str, present: bool) -> Outcome:
        """Make `label` present/absent on the device (or its owner); restore says whether it was present."""

    # -- the Hub protocol -----------------------------------------------------------------------------------

    async def apply(self, actions: list[Action]) -> list[ActionResult]:
        """One device listing per batch, then each action in order; a failure fails that action only."""
        started = time.perf_counter()
        try:
            devices = await self.discover()
        except OverlayError as exc:
            ms = (time.perf_counter() - started) * 1000
            log.warning("overlay listing failed", extra={"overlay": self.name, "error": str(exc)})
            return [ActionResult.failed(a, str(exc), duration_ms=ms) for a in actions]
        return [await self._apply_one(action, devices) for action in actions]

    async def _apply_one(self, action: Action, devices: list[OverlayDevice]) -> ActionResult:
        started = time.perf_counter()
        try:
            outcome = await self._dispatch(action, devices)
        except OverlayError as exc:
            log.warning(
                "overlay action failed", extra={"overlay": self.name, "action": action.describe(), "error": str(exc)}
            )
            return ActionResult.failed(action, str(exc), duration_ms=(time.perf_counter() - started) * 1000)
        return ActionResult.applied(
            action, verified=outcome.verified, detail=outcome.detail, restore=outcome.restore,
            duration_ms=(time.perf_counter() - started) * 1000,
        )  # fmt: skip

    def _find(self, action: Action, devices: list[OverlayDevice]) -> OverlayDevice | None:
        # With a key, only the key decides: the same address may already belong to a newer device.
        if action.peer_key is not None and self.lists_keys:
            return next((d for d in devices if d.node_key == action.peer_key), None)
        if action.address is None:
            raise UnsupportedAction(
                self.name, f"{self.kind}'s API does not list WireGuard keys: the action needs the tunnel address"
            )
        return next((d for d in devices if action.address in d.addresses), None)

    def _label_for(self, action: Action) -> str:
        if action.type is ActionType.QUARANTINE:
            label = self.spec.quarantine_label
            if label is None:
                raise UnsupportedAction(self.name, "no quarantine group configured (actions.quarantine_label)")
            return label
        label = self.spec.actions.set_labels.get(action.set_name or "")
        if label is None:
            raise UnsupportedAction(
                self.name, f"set {action.set_name} is not mapped to a tag or group (actions.set_labels)"
            )
        return label

    async def _dispatch(self, action: Action, devices: list[OverlayDevice]) -> Outcome:
        if action.hub != self.name:
            raise OverlayConfigError(self.name, f"action for {action.hub} sent to overlay {self.name}")
        if action.type is ActionType.KILL_FLOWS:
            raise UnsupportedAction(self.name, f"{self.kind} has no flow table to clear; cut the device off instead")
        label = self._label_for(action) if action.type in _LABEL_ACTIONS else None
        device = self._find(action, devices)
        target = action.peer_key or action.address
        if device is None:
            if action.type in _GONE_IS_DONE:
                return Outcome(True, f"no device {target} on {self.name}: already absent")
            raise OverlayNotFound(self.name, f"no device {target} in the {self.kind} listing")
        if action.type is ActionType.REMOVE_PEER:
            return await self._cut_off(device, self.spec.cut_off)
        if action.type is ActionType.ROTATE_KEY:
            return await self._force_reauth(device)
        assert label is not None  # noqa: S101 - set for every label action above
        outcome = await self._set_label(
            device.device_id, device.owner_id, label, present=action.type is not ActionType.DELETE_ELEMENT
        )
        if action.type is ActionType.QUARANTINE and action.ttl_s:
            # The overlay has no element timeout: say so rather than pretend the TTL is enforced.
            outcome = Outcome(outcome.verified, f"{outcome.detail}; no timeout on {self.kind}: lasts until undone",
                              outcome.restore)  # fmt: skip
        return outcome

    async def undo(self, action: Action, restore: dict[str, Any] | None) -> ActionResult:
        started = time.perf_counter()
        try:
            outcome = await self._undo(action, restore)
        except OverlayError as exc:
            return ActionResult.failed(action, str(exc), duration_ms=(time.perf_counter() - started) * 1000)
        return ActionResult.applied(
            action, verified=outcome.verified, detail=outcome.detail, duration_ms=(time.perf_counter() - started) * 1000
        )

    async def _undo(self, action: Action, restore: dict[str, Any] | None) -> Outcome:
        if action.type is ActionType.KILL_FLOWS:
            return Outcome(True, "nothing to undo")
        if action.type is ActionType.ROTATE_KEY:
            raise UnsupportedAction(self.name, "forced re-authentication cannot be undone: the device signs in again")
        if action.type is ActionType.REMOVE_PEER:
            if restore is None:
                raise UnsupportedAction(self.name, "no restore record: the cut-off did not happen or was already so")
            return await self._restore_access(restore)
        # Tags and groups: put back only what this action changed, and only our label (not a whole list that
        # someone else may have edited since).
        if restore is None:
            device = self._find(action, await self.discover())
            if device is None:
                raise OverlayNotFound(self.name, f"no device {action.peer_key or action.address} to restore")
            restore = {"device_id": device.device_id, "owner_id": device.owner_id, "label": self._label_for(action),
                       "was_present": action.type is ActionType.DELETE_ELEMENT}  # fmt: skip
        applied_present = action.type is not ActionType.DELETE_ELEMENT
        if bool(restore.get("was_present")) == applied_present:
            return Outcome(True, "nothing to undo: the tag/group was already so before the action")
        outcome = await self._set_label(
            str(restore["device_id"]), restore.get("owner_id"), str(restore["label"]), present=not applied_present
        )
        return Outcome(outcome.verified, outcome.detail)

    async def in_effect(self, actions: list[Action]) -> list[bool | None]:
        """An overlay's state is read back by each action itself (idempotent): tell nothing, so that an
        unverified action is simply carried out again."""
        return [None] * len(actions)

    @property
    def down_since(self) -> float | None:
        return None  # its HTTP client retries and backs off on its own

    async def probe(self, timeout: float) -> bool:
        return True

    def when_answering_again(self, callback: Callable[[str], None]) -> None:
        return None

    async def status(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            devices = await self.discover()
        except OverlayError as exc:
            return {"hub": self.name, "kind": self.kind.value, "reachable": False, "error": str(exc)}
        return {
            "hub": self.name,
            "kind": self.kind.value,
            "reachable": True,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "devices": len(devices),
            "owners": len(devices_by_owner(devices)),
        }

    async def close(self) -> None:
        await self.http.close()

    # -- helpers for the overlay modules --------------------------------------------------------------------

    async def read_modify_write(
        self,
        what: str,
        read: Callable[[], Awaitable[Json]],
        modify: Callable[[Json], Json | None],
        write: Callable[[Json], Awaitable[None]],
    ) -> tuple[Json, bool]:
        """Read, compute the new object, re-read and compare, then write; returns (before, wrote).

        The APIs offer no etag or version, so a second read just before the write is the check: if the object
        changed, another writer is active and a full-replace PUT would silently undo their change. We start
        over, and after `rmw_attempts` raise `ConcurrentModification` having written nothing. `modify` returns
        None when the object is already as wanted (idempotent repeat: no write).
        """
        for attempt in range(1, self.settings.rmw_attempts + 1):
            before = await read()
            after = modify(copy.deepcopy(before))
            if after is None:
                return before, False
            if await read() != before:
                log.info("concurrent modification", extra={"overlay": self.name, "object": what, "attempt": attempt})
                continue
            await write(after)
            return before, True
        raise ConcurrentModification(
            self.name,
            f"{what} changed between our read and write on each of {self.settings.rmw_attempts} attempts; "
            "nothing was written (another admin or automation is editing it: retry the action later)",
        )

    async def replace(
        self,
        what: str,
        method: str,
        path: str,
        read: Callable[[], Awaitable[Json]],
        modify: Callable[[Json], Json | None],
    ) -> tuple[Json, bool, Json]:
        """`read_modify_write` of an object the API replaces whole with one `method` request to `path`, then
        read back; returns (before, wrote, read back)."""

        async def write(new: Json) -> None:
            await self.http.request(method, path, json_body=new)

        before, wrote = await self.read_modify_write(what, read, modify, write)
        return before, wrote, await read()
