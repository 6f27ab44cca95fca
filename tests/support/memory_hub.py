"""A WireGuard hub held in memory, behind the `Hub` protocol: the service's whole decision lifecycle runs
against it in a fast test, beside the lab tests that prove the same with packets.

Honest semantics: an action changes the state (peers, nft sets whose elements may time out, established
flows), and whether it is verified is read back from that state, never assumed. It can be told to be
unreachable, to refuse a kind of action, or to accept one and not change anything (the read-back then
says so); and to hold every batch until released, so a test can stop the service mid-enforcement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from responder.core.actions import Action, ActionType
from responder.inventory import Inventory
from responder.pep import ActionResult, HubUnreachable

_ELEMENT_ADDS = {ActionType.QUARANTINE, ActionType.ADD_ELEMENT}


@dataclass
class MemoryPeer:
    allowed_ips: list[str]
    endpoint: str | None = None
    keepalive: int | None = None


class MemoryHub:
    def __init__(
        self,
        name: str,
        *,
        peers: dict[str, MemoryPeer] | None = None,
        sets: dict[str, set[str]] | None = None,
        flows: set[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.peers: dict[str, MemoryPeer] = dict(peers or {})  # by public key
        self._elements: dict[str, dict[str, float | None]] = {
            s: dict.fromkeys(members) for s, members in (sets or {}).items()
        }  # set -> address -> when it times out (epoch seconds), None for never
        self.flows: set[str] = set(flows or ())  # addresses with established connections
        self.revoked: set[str] = set()
        self._clock = clock
        self._down_since: float | None = None
        self._answering: list[Callable[[str], None]] = []
        self.probes = 0
        self.refusing: dict[ActionType, str] = {}  # answered with an error, nothing changed
        self.ignoring: set[ActionType] = set()  # accepted, nothing changed (the read-back shows it)
        self.losing_answers = False  # carried out, and the answer lost on the way back (no answer in time)
        self.batches: list[list[Action]] = []  # what `apply` was asked, call by call
        self.undone: list[Action] = []
        self.closed = 0
        self._open = asyncio.Event()
        self._open.set()
        self.waiting = asyncio.Event()  # set once a batch waits at a held hub
        self._held: set[asyncio.Task[Any]] = set()

    @classmethod
    def of(cls, inventory: Inventory, name: str, clock: Callable[[], float] = time.time) -> MemoryHub:
        """The hub as the inventory describes it: its peers up, in their sets, each with a flow open."""
        peers = [p for p in inventory.peers if p.hub == name]
        sets: dict[str, set[str]] = {"quarantine": set()}
        for p in peers:
            for s in p.sets:
                sets.setdefault(s, set()).add(str(p.tunnel_ip))
        return cls(
            name,
            peers={str(p.public_key): MemoryPeer([f"{p.tunnel_ip}/32"], keepalive=25) for p in peers},
            sets=sets,
            flows={str(p.tunnel_ip) for p in peers},
            clock=clock,
        )

    # -- what a test reads and tells --------------------------------------------------------------------

    def elements(self, set_name: str) -> set[str]:
        """The set's elements now: as in the kernel, one whose timeout has passed is gone."""
        now = self._clock()
        members = self._elements.get(set_name, {})
        for address in [a for a, until in members.items() if until is not None and until <= now]:
            del members[address]
        return set(members)

    @property
    def unreachable(self) -> bool:
        return self._down_since is not None

    @unreachable.setter
    def unreachable(self, down: bool) -> None:
        """Down: every call fails unanswered. Up again: the hub tells whoever asked (as a real one's
        connection does when it answers after an outage)."""
        if down and self._down_since is None:
            self._down_since = self._clock()
        elif not down and self._down_since is not None:
            self._down_since = None
            for callback in self._answering:
                callback(self.name)

    def reboot(self, baseline: MemoryHub) -> None:
        """Come back from a reboot as its configuration files say: `baseline`'s peers and set elements."""
        self.peers = dict(baseline.peers)
        self._elements = {name: dict(members) for name, members in baseline._elements.items()}

    def hold(self) -> None:
        """Every batch from now on waits (having set `waiting`) until `release`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def crash(self) -> None:
        """The batches held at the hub never happen, as when the responder is killed while they wait."""
        for task in self._held:
            task.cancel()

    # -- the Hub protocol -------------------------------------------------------------------------------

    async def apply(self, actions: list[Action]) -> list[ActionResult]:
        self.batches.append(list(actions))
        if not self._open.is_set() and (task := asyncio.current_task()) is not None:
            self.waiting.set()
            self._held.add(task)
            try:
                await self._open.wait()
            finally:
                self._held.discard(task)
        if self.unreachable:
            return [ActionResult.failed(a, f"hub {self.name} is unreachable", answered=False) for a in actions]
        results = [self._apply_one(a) for a in actions]
        if self.losing_answers:
            return [ActionResult.failed(a, "no answer in time (outcome unknown)", answered=False) for a in actions]
        return results

    def _apply_one(self, action: Action) -> ActionResult:
        if action.hub != self.name:
            raise ValueError(f"action for {action.hub} sent to {self.name}")
        if (why := self.refusing.get(action.type)) is not None:
            return ActionResult.failed(action, why)
        key, address = str(action.peer_key), str(action.address)
        restore: dict[str, Any] | None = None
        absent_before = action.peer_key is not None and key not in self.peers
        if action.type not in self.ignoring:
            if action.type in _ELEMENT_ADDS:
                until = self._clock() + action.ttl_s if action.ttl_s else None
                self._elements.setdefault(str(action.set_name), {})[address] = until
            elif action.type is ActionType.DELETE_ELEMENT:
                self._elements.get(str(action.set_name), {}).pop(address, None)
            elif action.type is ActionType.KILL_FLOWS:
                self.flows.discard(address)
            elif action.type is ActionType.REMOVE_PEER and (peer := self.peers.pop(key, None)) is not None:
                restore = {"allowed_ips": peer.allowed_ips, "endpoint": peer.endpoint, "keepalive": peer.keepalive}
            elif action.type is ActionType.ROTATE_KEY:
                self.peers.pop(key, None)
                self.revoked.add(key)
        verified = self._shows(action)
        detail = "verified" if verified else "applied, but the state read back does not show it"
        if absent_before:
            detail += " (the peer was already absent)"
        return ActionResult.applied(
            action, verified=verified, detail=detail, restore=restore, verified_at=self._clock() if verified else None
        )

    def _shows(self, action: Action) -> bool:
        """Whether the state read back shows the action in force."""
        if action.type in _ELEMENT_ADDS:
            return str(action.address) in self.elements(str(action.set_name))
        if action.type is ActionType.DELETE_ELEMENT:
            return str(action.address) not in self.elements(str(action.set_name))
        if action.type is ActionType.KILL_FLOWS:
            return str(action.address) not in self.flows
        return str(action.peer_key) not in self.peers

    async def undo(self, action: Action, restore: dict[str, Any] | None) -> ActionResult:
        self.undone.append(action)
        if self.unreachable:
            return ActionResult.failed(action, f"hub {self.name} is unreachable", answered=False)
        key, address = str(action.peer_key), str(action.address)
        if action.type is ActionType.ROTATE_KEY:
            return ActionResult.refused(action, "key rotation is irreversible: the device must enroll a new key")
        if action.type is ActionType.KILL_FLOWS:
            return ActionResult.applied(
                action, verified=True, detail="nothing to undo: flows re-establish by themselves"
            )
        if action.type in _ELEMENT_ADDS:
            self._elements.get(str(action.set_name), {}).pop(address, None)
            verified = address not in self.elements(str(action.set_name))
        elif action.type is ActionType.DELETE_ELEMENT:
            self._elements.setdefault(str(action.set_name), {})[address] = None
            verified = address in self.elements(str(action.set_name))
        elif restore is None and key in self.peers and key not in self.revoked:
            verified = True  # never removed (its removal's answer was lost before it ran): nothing to put back
        else:  # remove_peer: put it back as it was, never a revoked key
            if restore is None or "allowed_ips" not in restore:
                return ActionResult.refused(action, "cannot restore the peer: no record of its allowed IPs")
            if key in self.revoked:
                return ActionResult.failed(action, f"key {key} is revoked")
            self.peers[key] = MemoryPeer(
                list(restore["allowed_ips"]), restore.get("endpoint"), restore.get("keepalive")
            )
            verified = key in self.peers
        return ActionResult.applied(
            action, verified=verified, detail="restored" if verified else "restore not verified"
        )

    async def in_effect(self, actions: list[Action]) -> list[bool | None]:
        if self.unreachable:
            raise HubUnreachable(self.name, "unreachable")
        out: list[bool | None] = []
        for a in actions:
            if a.type is ActionType.KILL_FLOWS:
                out.append(None)
            elif a.type is ActionType.ROTATE_KEY:
                out.append(str(a.peer_key) not in self.peers and str(a.peer_key) in self.revoked)
            else:
                out.append(self._shows(a))
        return out

    @property
    def down_since(self) -> float | None:
        return self._down_since

    async def probe(self, timeout: float) -> bool:
        self.probes += 1
        return not self.unreachable

    def when_answering_again(self, callback: Callable[[str], None]) -> None:
        self._answering.append(callback)

    async def status(self) -> dict[str, Any]:
        if self.unreachable:
            return {"hub": self.name, "reachable": False, "error": f"hub {self.name} is unreachable"}
        peers = [{"key": k, "allowed_ips": p.allowed_ips} for k, p in self.peers.items()]
        return {
            "hub": self.name,
            "reachable": True,
            "peers": peers,
            "sets": {s: len(self.elements(s)) for s in self._elements},
        }

    async def close(self) -> None:
        # Nothing to disconnect; counted, and the state stays, as a real hub's does across restarts.
        self.closed += 1
