"""Carrying out action intents: claim each in the journal, apply them per hub in one batch, record the
result, the verification and what is needed to take the action back; and take an action back by its id.

The journal holds every intent before anything runs, so a crash leaves an open intent that `execute`
resumes. Every hub operation is idempotent ("ensure absent / ensure present"), so running an intent
again after an unknown outcome does not repeat its effect — a revoked key stays revoked once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from responder.core.actions import Action
from responder.core.decisions import action_from_dict, action_to_dict
from responder.journal import (
    DecisionRecord,
    DecisionState,
    IntentKind,
    IntentRecord,
    IntentState,
    Journal,
    StoredIntent,
)
from responder.pep import ActionResult, Hub

Clock = Callable[[], datetime]


class RestoreRefused(Exception):
    """The action cannot be taken back: unknown id, not applied, irreversible, or already restored."""


@dataclass(frozen=True, slots=True)
class IntentOutcome:
    intent_id: str
    result: ActionResult

    def as_dict(self) -> dict[str, object]:
        return {"id": self.intent_id, **self.result.as_dict()}


def intent_records(
    decision_id: str, actions: Sequence[Action], at: str, trace: Mapping[str, str]
) -> list[IntentRecord]:
    """One intent per action; its id (`DECISION.N`) is what an operator passes to `act restore`."""
    return [
        IntentRecord(
            id=f"{decision_id}.{n}",
            decision_id=decision_id,
            ordinal=n,
            kind=IntentKind.APPLY,
            action=json.dumps(action_to_dict(a), sort_keys=True),
            state=IntentState.PENDING,
            irreversible=not a.reversible,
            created_at=at,
            trace=dict(trace),
        )
        for n, a in enumerate(actions, start=1)
    ]


class Enforcer:
    def __init__(self, journal: Journal, hubs: Mapping[str, Hub], clock: Clock) -> None:
        self._journal = journal
        self._hubs = hubs
        self._clock = clock

    def _now(self) -> str:
        return self._clock().isoformat()

    async def manual(self, actions: Sequence[Action], actor: str, reason: str) -> list[IntentOutcome]:
        """Record an operator's own decision with its intents, then carry them out."""
        now = self._now()
        decision_id = f"m-{uuid.uuid4().hex[:12]}"
        body = {"actions": [action_to_dict(a) for a in actions], "actor": actor, "reason": reason}
        record = DecisionRecord(
            id=decision_id,
            subject=f"operator:{actor}",
            response="manual",
            level=0,
            state=DecisionState.ACTIVE,
            created_at=now,
            expires_at=None,
            body=json.dumps(body, sort_keys=True),
        )
        intents = intent_records(decision_id, actions, now, {})
        await self._journal.record_manual(record, intents)
        await self._journal.audit(now, actor, "manual_decision", decision_id, body)
        return await self.execute([(i.id, a) for i, a in zip(intents, actions, strict=True)])

    async def execute(self, intents: Sequence[tuple[str, Action]]) -> list[IntentOutcome]:
        """Claim, apply (all hubs at once, one batch per hub) and record. Intents that are no longer
        open (done by another instance, or cancelled) are skipped."""
        claimed: dict[str, list[tuple[str, Action]]] = {}
        for intent_id, action in intents:
            if await self._journal.start_intent(intent_id, self._now()) is not None:
                claimed.setdefault(action.hub, []).append((intent_id, action))
        outcomes: list[IntentOutcome] = []

        async def on_hub(hub_name: str, items: list[tuple[str, Action]]) -> None:
            hub = self._hubs.get(hub_name)
            actions = [a for _, a in items]
            if hub is None:
                results = [ActionResult(a, False, False, f"hub {hub_name} is not in the inventory") for a in actions]
            else:
                results = await hub.apply(actions)
            for (intent_id, _), result in zip(items, results, strict=True):
                await self._journal.finish_intent(
                    intent_id,
                    self._now(),
                    state=IntentState.DONE if result.ok else IntentState.FAILED,
                    result=result.detail,
                    verified=result.verified,
                    restore=None if result.restore is None else json.dumps(result.restore, sort_keys=True),
                )
                outcomes.append(IntentOutcome(intent_id, result))

        async with asyncio.TaskGroup() as group:
            for hub_name, items in claimed.items():
                group.create_task(on_hub(hub_name, items))
        order = {intent_id: n for n, (intent_id, _) in enumerate(intents)}
        return sorted(outcomes, key=lambda o: order[o.intent_id])

    async def resume(self) -> list[IntentOutcome]:
        """Carry out the intents a previous run wrote but did not finish."""
        open_intents = await self._journal.open_intents()
        return await self.execute([(i.id, action_from_dict(json.loads(i.action))) for i in open_intents])

    async def restore(self, intent_id: str, actor: str) -> IntentOutcome:
        """Take back one applied action by its intent id, verified like the action itself."""
        applied = _restorable(intent_id, await self._journal.intent(intent_id))
        action = action_from_dict(json.loads(applied.action))
        undo_id = f"{intent_id}.undo"
        previous = await self._journal.intent(undo_id)
        if previous is not None and previous.state is IntentState.DONE:
            raise RestoreRefused(f"action {intent_id} was already restored")
        now = self._now()
        if previous is None:
            record = IntentRecord(
                id=undo_id,
                decision_id=applied.decision_id,
                ordinal=applied.ordinal,
                kind=IntentKind.UNDO,
                action=applied.action,
                state=IntentState.PENDING,
                irreversible=False,
                created_at=now,
                trace=applied.trace,
            )
            await self._journal.add_intents([record])
        else:
            await self._journal.reopen_failed_intent(undo_id, now)
        if await self._journal.start_intent(undo_id, now) is None:
            raise RestoreRefused(f"action {intent_id} is being restored by someone else")
        hub = self._hubs.get(action.hub)
        restore = None if applied.restore is None else json.loads(applied.restore)
        if hub is None:
            result = ActionResult(action, False, False, f"hub {action.hub} is not in the inventory")
        else:
            result = await hub.undo(action, restore)
        await self._journal.finish_intent(
            undo_id,
            self._now(),
            state=IntentState.DONE if result.ok else IntentState.FAILED,
            result=result.detail,
            verified=result.verified,
        )
        await self._journal.audit(
            self._now(), actor, "restore", intent_id, {"ok": result.ok, "verified": result.verified}
        )
        return IntentOutcome(undo_id, result)


def _restorable(intent_id: str, intent: StoredIntent | None) -> StoredIntent:
    if intent is None or intent.kind is not IntentKind.APPLY:
        raise RestoreRefused(f"no applied action with id {intent_id!r}")
    if intent.irreversible:
        raise RestoreRefused(f"action {intent_id} is irreversible (a revoked key is re-enrolled, not restored)")
    if intent.state is not IntentState.DONE:
        raise RestoreRefused(f"action {intent_id} is {intent.state.value}, not applied")
    return intent
