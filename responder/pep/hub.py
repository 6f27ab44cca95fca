"""A WireGuard hub as an enforcement point: apply actions in batches, verify by reading back, undo."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Tracer

from responder.core.actions import Action, ActionType
from responder.inventory import HubMode, HubSpec
from responder.pep.backends import AgentBackend, Backend, CommandBackend, SudoAgentBackend
from responder.pep.errors import HubError, HubRefused
from responder.pep.plan import Operation, plan, steps, undo_operation
from responder.pep.transport import HubTransport, TransportSettings

STALE_AFTER_S = 300  # as the seed's check script: no handshake for 5 minutes with keepalive on


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    ok: bool
    verified: bool
    detail: str
    restore: dict[str, Any] | None = None
    duration_ms: float = 0.0
    verified_at: float | None = None
    """Wall-clock time the hub's read-back answered (an operation of a batch may answer before the rest)."""
    attempted: bool = True
    """False when it was refused before reaching the hub (vetoed, no such hub, no way to carry it out)."""
    answered: bool = True
    """False when the hub did not answer: unreachable, or no answer in time. Its outcome is unknown."""

    @classmethod
    def refused(cls, action: Action, why: str) -> ActionResult:
        """Not attempted: vetoed, or there is nowhere (or no way) to carry it out."""
        return cls(action, ok=False, verified=False, detail=why, attempted=False)

    @classmethod
    def failed(cls, action: Action, why: str, *, duration_ms: float = 0.0, answered: bool = True) -> ActionResult:
        """Attempted, and the enforcement point answered with an error, or (`answered=False`) did not answer."""
        return cls(action, ok=False, verified=False, detail=why, duration_ms=duration_ms, answered=answered)

    @classmethod
    def applied(
        cls,
        action: Action,
        *,
        verified: bool,
        detail: str,
        restore: dict[str, Any] | None = None,
        duration_ms: float = 0.0,
        verified_at: float | None = None,
    ) -> ActionResult:
        """Carried out; `verified` says whether the state read back shows it."""
        return cls(
            action, ok=True, verified=verified, detail=detail, restore=restore, duration_ms=duration_ms,
            verified_at=verified_at,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        from responder.core.decisions import action_to_dict  # noqa: PLC0415 - keeps this module light

        return {
            "action": action_to_dict(self.action),
            "ok": self.ok,
            "verified": self.verified,
            "detail": self.detail,
            "duration_ms": round(self.duration_ms, 2),
        }


class Hub(Protocol):
    """What the service needs of an enforcement point."""

    name: str

    async def apply(self, actions: list[Action]) -> list[ActionResult]: ...
    async def undo(self, action: Action, restore: dict[str, Any] | None) -> ActionResult: ...
    async def status(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...

    async def in_effect(self, actions: list[Action]) -> list[bool | None]:
        """Whether the hub shows each action's effect now, read back without changing anything; None where
        it cannot tell (a flow kill leaves no state). Raises HubError when the hub cannot be read."""
        ...

    @property
    def down_since(self) -> float | None:
        """Wall-clock start of the current outage (the hub does not answer); None while it answers."""
        ...

    async def probe(self, timeout: float) -> bool:
        """Whether the hub looks reachable now, sending nothing that changes it: worth another try."""
        ...

    def when_answering_again(self, callback: Callable[[str], None]) -> None:
        """Have `callback(name)` called whenever the hub answers after an outage."""
        ...


class SshHub:
    def __init__(
        self,
        spec: HubSpec,
        settings: TransportSettings | None = None,
        tracer: Tracer | None = None,
        *,
        peers: Mapping[str, list[str]] | None = None,
    ) -> None:
        """`peers`: the inventory's allowed IPs of this hub's peers, by key: what a removed peer is put back
        with when no record of the removal came back (its answer was lost)."""
        self.spec = spec
        self.name = spec.name
        self._tracer = tracer or trace.NoOpTracer()
        self.transport = HubTransport(spec, settings)
        self._known_peers = dict(peers or {})
        self._backend: Backend
        if spec.mode is HubMode.AGENT:
            self._backend = AgentBackend(self.transport)
        elif spec.sudo:
            self._backend = SudoAgentBackend(self.transport)
        else:
            self._backend = CommandBackend(self.transport)

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self._backend.call(op, args)

    async def apply(self, actions: list[Action]) -> list[ActionResult]:
        """Apply all actions for this hub: one operation per kind (one nft transaction, one `wg set`)."""
        results: list[ActionResult] = []
        plan_steps = steps(plan(self.spec, actions))
        operations = [o for step in plan_steps for o in step]
        if not operations:
            return results
        spans = [self._tracer.start_span(f"hub {o.op}", attributes=self._span_attributes(o)) for o in operations]
        answers: list[dict[str, Any] | HubError] = []
        took: list[float] = []
        for step in plan_steps:
            started = time.perf_counter()
            if answers and all(isinstance(a, HubError) and not isinstance(a, HubRefused) for a in answers):
                answers += answers[-1:] * len(step)  # the hub is gone: do not wait for it again
            else:
                try:
                    answers += await self._backend.call_many([(o.op, o.args) for o in step])
                except HubError as exc:
                    answers += [exc] * len(step)
            took += [(time.perf_counter() - started) * 1000] * len(step)
        finished = time.time()
        for operation, answer, span, ms in zip(operations, answers, spans, took, strict=True):
            if isinstance(answer, HubError):
                span.set_attribute("responder.error", str(answer))
                span.end()
                answered = isinstance(answer, HubRefused)
                results += [
                    ActionResult.failed(a, str(answer), duration_ms=ms, answered=answered) for a in operation.actions
                ]
                continue
            verified = bool(answer.get("verified"))
            span.set_attribute("responder.verified", verified)
            span.end()
            restores: dict[str, Any] = answer.get("restore", {})
            for a in operation.actions:
                restore: dict[str, Any] | None = None
                detail = "verified" if verified else "applied, but the state read back does not show it"
                if a.type in {ActionType.REMOVE_PEER, ActionType.ROTATE_KEY}:
                    restore = restores.get(str(a.peer_key))
                    if str(a.peer_key) in answer.get("absent_before", []):
                        detail += " (the peer was already absent)"
                detail += _not_persisted(answer)
                at = float(answer.get("answered_at", finished))
                results.append(
                    ActionResult.applied(
                        a, verified=verified, detail=detail, restore=restore, duration_ms=ms,
                        verified_at=at if verified else None,
                    )
                )  # fmt: skip
        # The plan reorders (set changes, peers, then flows); callers match results to actions by position.
        by_action = {r.action: r for r in results}
        return [by_action[a] for a in actions]

    def _span_attributes(self, operation: Operation) -> dict[str, str | int]:
        return {
            "responder.hub": self.name,
            "responder.operation": operation.op,
            "responder.mode": self.spec.mode.value,
            "responder.actions": len(operation.actions),
        }

    async def undo(self, action: Action, restore: dict[str, Any] | None) -> ActionResult:
        started = time.perf_counter()
        if restore is None and action.peer_key is not None and str(action.peer_key) in self._known_peers:
            restore = {"allowed_ips": self._known_peers[str(action.peer_key)]}
        try:
            operation = undo_operation(self.spec, action, restore)
        except ValueError as exc:
            return ActionResult.refused(action, str(exc))
        if operation is None:
            return ActionResult.applied(
                action, verified=True, detail="nothing to undo: flows re-establish by themselves"
            )
        try:
            answer = await self._backend.call(operation.op, operation.args)
        except HubError as exc:
            return ActionResult.failed(
                action, str(exc), duration_ms=(time.perf_counter() - started) * 1000,
                answered=isinstance(exc, HubRefused),
            )  # fmt: skip
        verified = bool(answer.get("verified"))
        detail = ("restored" if verified else "restore not verified") + _not_persisted(answer)
        return ActionResult.applied(
            action, verified=verified, detail=detail,
            duration_ms=(time.perf_counter() - started) * 1000,
        )  # fmt: skip

    async def in_effect(self, actions: list[Action]) -> list[bool | None]:
        """Read the hub back for these actions: its peers once, each set once, and its revoked keys when
        a rotation is asked about (a rotation is in effect only if the key is gone *and* revoked)."""
        peers: set[str] | None = None
        sets: dict[str, set[str]] = {}
        revoked: set[str] | None = None
        out: list[bool | None] = []
        for action in actions:
            if action.type is ActionType.KILL_FLOWS:
                out.append(None)
                continue
            if action.peer_key is not None:
                if peers is None:
                    listing = await self.call("peers", {"interface": self.spec.interface})
                    peers = {str(p["key"]) for p in listing["peers"]}
                key = str(action.peer_key)
                if action.type is ActionType.ROTATE_KEY and key not in peers:
                    if revoked is None:
                        revoked = await self._revoked()
                    out.append(None if revoked is None else key in revoked)
                else:
                    out.append(key not in peers)
                continue
            name = str(action.set_name)
            if name not in sets:
                listing = await self.call("list_set", {"table": self.spec.table, "set": name})
                sets[name] = set(listing["elements"])
            present = str(action.address) in sets[name]
            out.append(not present if action.type is ActionType.DELETE_ELEMENT else present)
        return out

    async def _revoked(self) -> set[str] | None:
        """The keys the hub denies for good; None when its agent predates the `revoked` operation."""
        try:
            answer = await self.call("revoked", {"interface": self.spec.interface})
        except HubRefused as exc:
            if "unknown op" in str(exc):
                return None
            raise
        return {str(k) for k in answer.get("keys", [])}

    @property
    def down_since(self) -> float | None:
        return self.transport.down_since

    async def probe(self, timeout: float) -> bool:
        return await self.transport.probe(timeout)

    def when_answering_again(self, callback: Callable[[str], None]) -> None:
        self.transport.when_answering_again(callback)

    async def status(self) -> dict[str, Any]:
        """Reachability, the agent's release, peers with handshake age (stale after 300 s), and set sizes."""
        started = time.perf_counter()
        try:
            peers = (await self._backend.call("peers", {"interface": self.spec.interface}))["peers"]
            sets: dict[str, int | None] = {}
            for name in ("admin_devices", "app_servers", "quarantine"):
                try:
                    listing = await self._backend.call("list_set", {"table": self.spec.table, "set": name})
                    sets[name] = len(listing["elements"])
                except HubError:
                    sets[name] = None
            agent = await self._agent_release()
        except HubError as exc:
            return {"hub": self.name, "reachable": False, "error": str(exc), "breaker": self.transport.breaker_state}
        now = time.time()
        rows = []
        for p in peers:
            age = None if not p["latest_handshake"] else max(0, int(now - p["latest_handshake"]))
            stale = p["keepalive"] is not None and (age is None or age > STALE_AFTER_S)
            rows.append({**p, "handshake_age_s": age, "stale": stale})
        return {
            "hub": self.name,
            "reachable": True,
            "mode": self.spec.mode.value,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "peers": rows,
            "sets": sets,
            "agent": agent,
            "breaker": self.transport.breaker_state,
        }

    async def _agent_release(self) -> dict[str, Any] | None:
        """The hub agent's release and the sha256 of its file as installed (None in agentless mode; an agent
        older than release numbers reports its protocol version only)."""
        if self.spec.mode is not HubMode.AGENT and not self.spec.sudo:
            return None
        hello = await self._backend.call("hello", {})
        return {
            "release": hello.get("release", "unknown"),
            "sha256": hello.get("sha256", ""),
            "protocol": hello.get("version"),
        }

    async def close(self) -> None:
        await self.transport.close()


def _not_persisted(answer: Mapping[str, Any]) -> str:
    """What a detail adds when the hub agent could not make the change in the hub's own files (wg0.conf,
    the nft include): the running change stands, but a restart of the hub's interface or firewall from
    those files undoes it until the reconciler re-asserts it."""
    if answer.get("persisted") is not False:
        return ""
    why = str(answer.get("persist_error", "unknown error"))
    return f"; not kept in the hub's configuration files ({why}): a reload of them undoes it"
