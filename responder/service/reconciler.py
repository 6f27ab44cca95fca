"""Re-asserting what is in force. A hub that rebooted, an `nft` ruleset reloaded from its file, a WireGuard
interface restarted from its config: each brings back what the responder took away. Every interval, the
reconciler reads each hub back and re-applies, idempotently, the actions of the decisions in force whose
effect is gone, and reports that drift (log, metric, audit trail)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from responder.core.actions import Action, ActionType
from responder.core.decisions import action_from_dict
from responder.journal import DecisionState, IntentKind, IntentState, Journal
from responder.pep.errors import HubError
from responder.pep.hub import SshHub
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
_ABSENT_PEER = {ActionType.REMOVE_PEER, ActionType.ROTATE_KEY}


@dataclass(frozen=True, slots=True)
class Drift:
    hub: str
    action: Action
    detail: str


class Reconciler:
    def __init__(
        self,
        journal: Journal,
        hubs: Mapping[str, SshHub],
        clock: Callable[[], datetime],
        metrics: Metrics,
        peer_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self._peer_change = peer_change
        self._journal = journal
        self._hubs = hubs
        self._clock = clock
        self._metrics = metrics

    async def expected(self) -> dict[str, list[Action]]:
        """Per hub, the applied actions of the decisions in force whose effect must still show."""
        now = self._clock().timestamp()
        out: dict[str, list[Action]] = {}
        for decision in await self._journal.decisions(DecisionState.ACTIVE, 100_000):
            for intent in await self._journal.intents_for(decision.id):
                if intent.kind is not IntentKind.APPLY or intent.state is not IntentState.DONE:
                    continue
                action = action_from_dict(json.loads(intent.action))
                if action.type is ActionType.KILL_FLOWS:
                    continue  # flows are not state to keep; the set changes stop new ones
                if action.ttl_s and datetime.fromisoformat(intent.updated_at).timestamp() + action.ttl_s <= now:
                    continue  # the kernel timeout has lifted it, as intended
                out.setdefault(action.hub, []).append(action)
        return out

    async def reconcile_once(self) -> list[Drift]:
        drifts: list[Drift] = []
        for hub_name, actions in (await self.expected()).items():
            hub = self._hubs.get(hub_name)
            if hub is None:
                continue
            try:
                drifted = await self._drifted(hub, actions)
            except HubError as exc:
                log.warning("reconcile: cannot read %s back: %s", hub_name, exc)
                continue
            if not drifted:
                continue
            if self._peer_change is not None:
                for action, _ in drifted:
                    if action.peer_key is not None:
                        self._peer_change(hub_name, str(action.peer_key))
            results = await hub.apply([a for a, _ in drifted])
            for (action, why), result in zip(drifted, results, strict=True):
                state = "re-asserted" if result.ok and result.verified else f"NOT repaired: {result.detail}"
                drifts.append(Drift(hub_name, action, f"{why}; {state}"))
                self._metrics.drift.labels(hub_name, action.type.value).inc()
                log.warning("drift on %s: %s — %s; %s", hub_name, action.describe(), why, state)
                await self._journal.audit(
                    self._clock().isoformat(), "reconciler", "drift", hub_name,
                    {"action": action.describe(), "why": why, "repaired": result.ok and result.verified},
                )  # fmt: skip
        return drifts

    async def _drifted(self, hub: SshHub, actions: list[Action]) -> list[tuple[Action, str]]:
        peers: set[str] | None = None
        sets: dict[str, set[str]] = {}
        drifted: list[tuple[Action, str]] = []
        for action in actions:
            if action.type in _ABSENT_PEER:
                if peers is None:
                    answer: dict[str, Any] = await hub.call("peers", {"interface": hub.spec.interface})
                    peers = {p["key"] for p in answer["peers"]}
                if str(action.peer_key) in peers:
                    drifted.append((action, "the peer is back on the hub"))
                continue
            name = str(action.set_name)
            if name not in sets:
                listing = await hub.call("list_set", {"table": hub.spec.table, "set": name})
                sets[name] = set(listing["elements"])
            present = str(action.address) in sets[name]
            if action.type is ActionType.DELETE_ELEMENT and present:
                drifted.append((action, f"{action.address} is back in {name}"))
            elif action.type in {ActionType.QUARANTINE, ActionType.ADD_ELEMENT} and not present:
                drifted.append((action, f"{action.address} is missing from {name}"))
        return drifted

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if stop.is_set():
                return
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile pass failed; retrying next interval")
