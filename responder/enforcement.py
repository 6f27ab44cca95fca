"""Carrying out action intents: claim each in the journal, apply them per hub in one batch, record the
result, the verification and what is needed to take the action back; and take an action back by its id.

The journal holds every intent before anything runs, so a crash leaves an open intent that `resume`
carries out. Every hub operation is idempotent ("ensure absent / ensure present"), so running an intent
again after an unknown outcome does not repeat its effect — a revoked key stays revoked once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.trace import Tracer

from responder.core.actions import Action
from responder.core.decisions import action_from_dict, action_to_dict
from responder.journal import (
    DecisionRecord,
    DecisionState,
    FinishedIntent,
    IntentKind,
    IntentRecord,
    IntentState,
    Journal,
    StoredIntent,
)
from responder.pep import ActionResult, Hub
from responder.telemetry.tracing import context_from

Clock = Callable[[], datetime]
Veto = Callable[[Action], str | None]
PeerChange = Callable[[str, str], None]  # (hub, public key): told before the responder changes a peer


class RestoreRefused(Exception):
    """The action cannot be taken back: unknown id, not applied, irreversible, or already restored."""


@dataclass(frozen=True, slots=True)
class IntentOutcome:
    intent_id: str
    result: ActionResult

    def as_dict(self) -> dict[str, object]:
        return {"id": self.intent_id, **self.result.as_dict()}


def intent_records(
    decision_id: str,
    actions: Sequence[Action],
    at: str,
    trace: Mapping[str, str],
    state: IntentState = IntentState.PENDING,
) -> list[IntentRecord]:
    """One intent per action; its id (`DECISION.N`) is what an operator passes to `act restore`."""
    return [
        IntentRecord(
            id=f"{decision_id}.{n}",
            decision_id=decision_id,
            ordinal=n,
            kind=IntentKind.APPLY,
            action=json.dumps(action_to_dict(a), sort_keys=True),
            state=state,
            irreversible=not a.reversible,
            created_at=at,
            trace=dict(trace),
        )
        for n, a in enumerate(actions, start=1)
    ]


def _no_veto(_: Action) -> None:
    return None


def _ignore(_hub: str, _key: str) -> None:
    return None


class Enforcer:
    def __init__(
        self,
        journal: Journal,
        hubs: Mapping[str, Hub],
        clock: Clock,
        *,
        veto: Veto = _no_veto,
        peer_change: PeerChange = _ignore,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer or trace.NoOpTracer()
        self._journal = journal
        self._hubs = hubs
        self._clock = clock
        self._veto = veto
        self._peer_change = peer_change  # the hub monitor must not report our own changes as someone else's

    def _note(self, action: Action) -> None:
        if action.peer_key is not None:
            self._peer_change(action.hub, str(action.peer_key))

    def _now(self) -> str:
        return self._clock().isoformat()

    async def manual(
        self, actions: Sequence[Action], actor: str, reason: str, *, override: Mapping[str, object] | None = None
    ) -> list[IntentOutcome]:
        """Record an operator's own decision with its intents, then carry them out. `override` says why a
        protected target is acted on all the same; it is kept with the decision and in the audit trail."""
        now = self._now()
        decision_id = f"m-{uuid.uuid4().hex[:12]}"
        body: dict[str, object] = {"actions": [action_to_dict(a) for a in actions], "actor": actor, "reason": reason}
        if override is not None:
            body["force_protected"] = dict(override)
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

    async def execute(
        self,
        intents: Sequence[tuple[str, Action]],
        traces: Mapping[str, Mapping[str, str]] | None = None,
        *,
        already_claimed: bool = False,
    ) -> list[IntentOutcome]:
        """Claim, apply (all hubs at once, one batch per hub) and record. Intents that are no longer
        open (done by another instance, or cancelled) are skipped. `traces` holds each intent's trace
        context, so that its hub operations join the trace of the delivery that caused them."""
        claimed: dict[str, list[tuple[str, Action]]] = {}
        if already_claimed:  # written as running by the caller, in the transaction that decided them
            mine = {i for i, _ in intents}
        else:
            mine = await self._journal.start_intents([i for i, _ in intents], self._now()) if intents else set()
        for intent_id, action in intents:
            if intent_id in mine:
                claimed.setdefault(action.hub, []).append((intent_id, action))
        outcomes: list[IntentOutcome] = []

        async def on_hub(hub_name: str, items: list[tuple[str, Action]]) -> None:
            parent = context_from((traces or {}).get(items[0][0], {}))
            with self._tracer.start_as_current_span(
                f"enforce {hub_name}", context=parent,
                attributes={"responder.hub": hub_name, "responder.intents": [i for i, _ in items]},
            ) as span:  # fmt: skip
                await apply_on_hub(hub_name, items)
                span.set_attribute("responder.verified", all(o.result.verified for o in outcomes if o.intent_id in
                                                             {i for i, _ in items}))  # fmt: skip

        async def apply_on_hub(hub_name: str, items: list[tuple[str, Action]]) -> None:
            hub = self._hubs.get(hub_name)
            allowed: list[tuple[str, Action]] = []
            results: list[tuple[str, ActionResult]] = []
            for intent_id, action in items:
                why = self._veto(action)
                if why is not None:
                    results.append((intent_id, ActionResult.refused(action, f"refused at the executor: {why}")))
                elif hub is None:
                    results.append((intent_id, ActionResult.refused(action, f"hub {hub_name} is not known")))
                else:
                    allowed.append((intent_id, action))
            if allowed and hub is not None:
                for _, action in allowed:
                    self._note(action)
                applied = await hub.apply([a for _, a in allowed])
                results += [(i, r) for (i, _), r in zip(allowed, applied, strict=True)]
            await self._journal.finish_intents([_finished(i, r, r.restore) for i, r in results], self._now())
            outcomes.extend(IntentOutcome(i, r) for i, r in results)

        async with asyncio.TaskGroup() as group:
            for hub_name, items in claimed.items():
                group.create_task(on_hub(hub_name, items))
        order = {intent_id: n for n, (intent_id, _) in enumerate(intents)}
        return sorted(outcomes, key=lambda o: order[o.intent_id])

    async def _finish(self, intent_id: str, result: ActionResult, restore: object = None) -> None:
        await self._journal.finish_intents([_finished(intent_id, result, restore)], self._now())

    async def resume(self) -> list[IntentOutcome]:
        """Carry out the intents a previous run wrote but did not finish, applies and undos alike."""
        open_intents = await self._journal.open_intents()
        applies = [(i.id, action_from_dict(json.loads(i.action))) for i in open_intents if i.kind is IntentKind.APPLY]
        outcomes = await self.execute(applies, {i.id: i.trace for i in open_intents})
        for intent in open_intents:
            if intent.kind is IntentKind.UNDO:
                applied = await self._journal.intent(intent.id.removesuffix(".undo"))
                if applied is not None and (outcome := await self._run_undo(intent.id, applied)) is not None:
                    outcomes.append(outcome)
        return outcomes

    async def restore(self, intent_id: str, actor: str) -> IntentOutcome:
        """Take back one applied action by its intent id, verified like the action itself."""
        applied = _restorable(intent_id, await self._journal.intent(intent_id))
        undo_id = f"{intent_id}.undo"
        previous = await self._journal.intent(undo_id)
        if previous is not None and previous.state is IntentState.DONE:
            raise RestoreRefused(f"action {intent_id} was already restored")
        now = self._now()
        if previous is None:
            await self._journal.add_intents([_undo_record(applied, now)])
        else:
            await self._journal.reopen_failed_intent(undo_id, now)
        outcome = await self._run_undo(undo_id, applied)
        if outcome is None:
            raise RestoreRefused(f"action {intent_id} is being restored by someone else")
        await self._journal.audit(
            self._now(), actor, "restore", intent_id, {"ok": outcome.result.ok, "verified": outcome.result.verified}
        )
        return outcome

    async def undo_decision(self, decision_id: str) -> list[IntentOutcome]:
        """Take back every applied, reversible action of a decision (undo or expiry). Idempotent."""
        intents = await self._journal.intents_for(decision_id)
        done_undos = {i.id for i in intents if i.kind is IntentKind.UNDO and i.state is IntentState.DONE}
        now = self._now()
        todo = [
            i
            for i in intents
            if i.kind is IntentKind.APPLY
            and i.state is IntentState.DONE
            and not i.irreversible
            and f"{i.id}.undo" not in done_undos
        ]
        existing = {i.id for i in intents}
        await self._journal.add_intents([_undo_record(i, now) for i in todo if f"{i.id}.undo" not in existing])
        for i in todo:
            await self._journal.reopen_failed_intent(f"{i.id}.undo", now)
        outcomes = []
        for i in reversed(todo):  # the reverse of the order they were applied in
            outcome = await self._run_undo(f"{i.id}.undo", i)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def _run_undo(self, undo_id: str, applied: StoredIntent) -> IntentOutcome | None:
        if await self._journal.start_intent(undo_id, self._now()) is None:
            return None
        action = action_from_dict(json.loads(applied.action))
        hub = self._hubs.get(action.hub)
        restore = None if applied.restore is None else json.loads(applied.restore)
        if hub is None:
            result = ActionResult.refused(action, f"hub {action.hub} is not known")
        else:
            self._note(action)
            result = await hub.undo(action, restore)
        await self._finish(undo_id, result)
        return IntentOutcome(undo_id, result)


def _finished(intent_id: str, result: ActionResult, restore: object) -> FinishedIntent:
    at = None if result.verified_at is None else datetime.fromtimestamp(result.verified_at, UTC).isoformat()
    return FinishedIntent(
        intent_id,
        IntentState.DONE if result.ok else IntentState.FAILED,
        result.detail,
        result.verified,
        None if restore is None else json.dumps(restore, sort_keys=True),
        at,
    )


def _undo_record(applied: StoredIntent, now: str) -> IntentRecord:
    return IntentRecord(
        id=f"{applied.id}.undo",
        decision_id=applied.decision_id,
        ordinal=applied.ordinal,
        kind=IntentKind.UNDO,
        action=applied.action,
        state=IntentState.PENDING,
        irreversible=False,
        created_at=now,
        trace=applied.trace,
    )


def _restorable(intent_id: str, intent: StoredIntent | None) -> StoredIntent:
    if intent is None or intent.kind is not IntentKind.APPLY:
        raise RestoreRefused(f"no applied action with id {intent_id!r}")
    if intent.irreversible:
        raise RestoreRefused(f"action {intent_id} is irreversible (a revoked key is re-enrolled, not restored)")
    if intent.state is not IntentState.DONE:
        raise RestoreRefused(f"action {intent_id} is {intent.state.value}, not applied")
    return intent
