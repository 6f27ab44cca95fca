"""The executor: carries out action intents. Claim each in the journal, apply them on every hub at once in
one batch per hub, record the result, the verification and what is needed to take the action back; and
take an action back by its id.

The journal holds every intent before anything runs, so a crash leaves an open intent that `resume`
carries out. Every hub operation is idempotent ("ensure absent / ensure present"), so running an intent
again after an unknown outcome does not repeat its effect — a revoked key stays revoked once.

An intent is `done` only when the hub's read-back shows its effect. Until then it is `pending` (the hub
did not answer, or its read-back does not show it yet) or `failed` (the hub answered with an error), with
the reason and since when, and `converge` tries it again: read the hub back, apply what is missing, read
back. An intent refused before it reached a hub (a protected target, no such hub) is `refused`, for good.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.trace import Tracer

from responder.core.actions import Action, ActionType
from responder.core.decisions import action_from_dict, action_to_dict
from responder.journal import (
    DecisionRecord,
    DecisionState,
    FinishedIntent,
    Intent,
    IntentKind,
    IntentRecord,
    IntentState,
    Journal,
    StoredIntent,
)
from responder.pep import ActionResult, Hub, HubError
from responder.telemetry.metrics import Metrics
from responder.telemetry.tracing import context_from

Clock = Callable[[], datetime]
Veto = Callable[[Action], str | None]
PeerChange = Callable[[str, str], None]  # (hub, public key): told before the responder changes a peer
Outstanding = Callable[[str], None]  # (hub): an intent there is not verified and must be tried again


class RestoreRefused(Exception):
    """The action cannot be taken back: unknown id, not applied, irreversible, or already restored."""


@dataclass(frozen=True, slots=True)
class IntentOutcome:
    intent_id: str
    result: ActionResult

    def as_dict(self) -> dict[str, object]:
        return {"id": self.intent_id, **self.result.as_dict()}


@dataclass(frozen=True, slots=True)
class Converged:
    """One try at bringing a hub to what is in force (see `Executor.converge`)."""

    hub: str
    outcomes: list[IntentOutcome]
    """Every intent this try settled or tried: confirmed by the read-back, applied, or taken back."""
    drifted: list[tuple[StoredIntent, str]]
    """Intents that were verified and whose effect the hub no longer shows, with what was found."""
    unreadable: str | None = None
    """Why the hub could not be read back (nothing was tried); None when it was."""

    @property
    def outstanding(self) -> bool:
        """Whether anything is still to converge on this hub after this try."""
        return self.unreadable is not None or any(not (o.result.ok and o.result.verified) for o in self.outcomes)


def intents_of(decision_id: str, actions: Sequence[Action], trace: Mapping[str, str] | None = None) -> list[Intent]:
    """One intent per action of a decision; its id (`DECISION.N`) is what an operator passes to `act restore`."""
    context = dict(trace or {})
    return [Intent(f"{decision_id}.{n}", a, context) for n, a in enumerate(actions, start=1)]


def intent_records(
    decision_id: str, intents: Sequence[Intent], at: str, state: IntentState = IntentState.PENDING
) -> list[IntentRecord]:
    """The journal's rows for a decision's intents (as `intents_of` numbers them)."""
    return [
        IntentRecord(
            id=i.id,
            decision_id=decision_id,
            ordinal=n,
            kind=IntentKind.APPLY,
            action=json.dumps(action_to_dict(i.action), sort_keys=True),
            state=state,
            irreversible=not i.action.reversible,
            created_at=at,
            trace=dict(i.trace),
        )
        for n, i in enumerate(intents, start=1)
    ]


def intent_of(stored: StoredIntent) -> Intent:
    return Intent(stored.id, action_from_dict(json.loads(stored.action)), stored.trace)


def _no_veto(_: Action) -> None:
    return None


def _ignore(_hub: str, _key: str) -> None:
    return None


class Executor:
    """The one owner of carrying out intents: claim, apply per hub, record, and take back. Used by the
    service (with the veto of protected targets, the hub monitor's note of its own changes, metrics) and
    by `responder act`."""

    def __init__(
        self,
        journal: Journal,
        hubs: Mapping[str, Hub],
        clock: Clock,
        *,
        veto: Veto = _no_veto,
        peer_change: PeerChange = _ignore,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._tracer = tracer or trace.NoOpTracer()
        self._journal = journal
        self._hubs = hubs
        self._clock = clock
        self._veto = veto
        self._peer_change = peer_change  # the hub monitor must not report our own changes as someone else's
        self._metrics = metrics
        self._outstanding: list[Outstanding] = []
        # Intents being carried out in this process: an undo waits for them, so that no apply lands after it.
        self._busy: dict[str, asyncio.Event] = {}

    def when_outstanding(self, callback: Outstanding) -> None:
        """Have `callback(hub)` called when an intent on that hub ends a try unverified."""
        self._outstanding.append(callback)

    def reserve(self, intent_ids: Sequence[str]) -> None:
        """Mark intents as being carried out here, from now until their try ends (`carry_out`, `converge`
        and `execute` release them). Call it before the journal claims them, in the same step of the loop,
        so that an undo arriving in between waits for them."""
        for intent_id in intent_ids:
            self._busy.setdefault(intent_id, asyncio.Event())

    def busy(self, intent_id: str) -> bool:
        """Whether the intent is being carried out in this process now."""
        return intent_id in self._busy

    def _release(self, intent_ids: Sequence[str]) -> None:
        for intent_id in intent_ids:
            if (event := self._busy.pop(intent_id, None)) is not None:
                event.set()

    async def _settled(self, decision_id: str) -> None:
        """Wait for this process's tries of the decision's intents to end."""
        prefix = f"{decision_id}."
        waiting = [e.wait() for i, e in list(self._busy.items()) if i.startswith(prefix)]
        if waiting:
            await asyncio.gather(*waiting)

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
        intents = intents_of(decision_id, actions)
        await self._journal.record_manual(record, intent_records(decision_id, intents, now))
        await self._journal.audit(now, actor, "manual_decision", decision_id, body)
        return await self.execute(intents)

    async def execute(self, intents: Sequence[Intent]) -> list[IntentOutcome]:
        """Claim the intents, then carry out those this call claimed. Intents that are no longer open (done
        by another instance, or cancelled) are skipped."""
        ids = [i.id for i in intents]
        self.reserve(ids)
        try:
            mine = await self._journal.start_intents(ids, self._now()) if intents else set()
        finally:
            self._release(ids)
        return await self.carry_out([i for i in intents if i.id in mine])

    async def carry_out(self, intents: Sequence[Intent], *, detected_at: str = "") -> list[IntentOutcome]:
        """Apply intents already claimed (running, by this instance) on all hubs at once, one batch per hub,
        and record each result; outcomes in the order of `intents`. `detected_at`: when the delivery that
        caused them arrived, for the containment metric."""
        ids = [i.id for i in intents]
        self.reserve(ids)
        try:
            batches: dict[str, list[Intent]] = {}
            for intent in intents:
                batches.setdefault(intent.action.hub, []).append(intent)
            async with asyncio.TaskGroup() as group:
                running = [group.create_task(self._on_hub(hub, batch)) for hub, batch in batches.items()]
        finally:
            self._release(ids)
        order = {intent.id: n for n, intent in enumerate(intents)}
        outcomes = sorted((o for task in running for o in task.result()), key=lambda o: order[o.intent_id])
        self._measure(outcomes, detected_at)
        return outcomes

    async def _on_hub(self, hub_name: str, batch: list[Intent]) -> list[IntentOutcome]:
        """One hub's batch, in the trace of the delivery that caused it."""
        with self._tracer.start_as_current_span(
            f"enforce {hub_name}", context=context_from(batch[0].trace),
            attributes={"responder.hub": hub_name, "responder.intents": [i.id for i in batch]},
        ) as span:  # fmt: skip
            outcomes = await self._apply_batch(hub_name, batch)
            span.set_attribute("responder.verified", all(o.result.verified for o in outcomes))
        return outcomes

    async def _apply_batch(self, hub_name: str, batch: list[Intent]) -> list[IntentOutcome]:
        """Refuse what is vetoed or has no hub, apply the rest in one call to the hub, record every result."""
        hub = self._hubs.get(hub_name)
        allowed: list[Intent] = []
        outcomes: list[IntentOutcome] = []
        for intent in batch:
            refusal = self._veto(intent.action)
            if refusal is not None:
                refusal = f"refused at the executor: {refusal}"
            elif hub is None:
                refusal = f"hub {hub_name} is not known"
            if refusal is None:
                allowed.append(intent)
            else:
                outcomes.append(IntentOutcome(intent.id, ActionResult.refused(intent.action, refusal)))
        if allowed and hub is not None and (since := hub.down_since) is not None:
            # Known down: do not wait for it; the convergence loop tries again the moment it answers.
            why = f"hub {hub_name} does not answer (since {_iso(since)}); tried again when it does"
            outcomes += [IntentOutcome(i.id, ActionResult.failed(i.action, why, answered=False)) for i in allowed]
        elif allowed and hub is not None:
            for intent in allowed:
                self._note(intent.action)
            applied = await hub.apply([i.action for i in allowed])
            outcomes += [IntentOutcome(i.id, r) for i, r in zip(allowed, applied, strict=True)]
        await self._journal.finish_intents(
            [_finished(o.intent_id, o.result, o.result.restore) for o in outcomes], self._now()
        )
        self._tell_outstanding(hub_name, outcomes)
        return outcomes

    def _tell_outstanding(self, hub_name: str, outcomes: Sequence[IntentOutcome]) -> None:
        if any(_state_of(o.result) in (IntentState.PENDING, IntentState.FAILED) for o in outcomes):
            for callback in self._outstanding:
                callback(hub_name)

    def _measure(self, outcomes: list[IntentOutcome], detected_at: str) -> None:
        """Count the actions carried out; with `detected_at`, observe detection to containment."""
        if self._metrics is None:
            return
        for outcome in outcomes:
            r = outcome.result
            self._metrics.actions.labels(r.action.type.value, "ok" if r.ok else "failed", str(r.verified)).inc()
        # Contained when the tiers and tunnels are closed and read back; the flow kill that follows is not
        # part of it (see responder/pep/plan.py).
        containing = [o.result for o in outcomes if o.result.action.type is not ActionType.KILL_FLOWS]
        if detected_at and containing and all(r.ok and r.verified_at for r in containing):
            contained = max(r.verified_at or 0.0 for r in containing)
            detected = datetime.fromisoformat(detected_at).timestamp()
            self._metrics.containment_seconds.observe(max(0.0, contained - detected))

    async def _finish(self, intent_id: str, result: ActionResult, restore: object = None) -> None:
        await self._journal.finish_intents([_finished(intent_id, result, restore)], self._now())

    async def resume(self) -> list[IntentOutcome]:
        """Carry out the intents a previous run wrote but did not finish, applies and undos alike."""
        open_intents = await self._journal.open_intents()
        outcomes = await self.execute([intent_of(i) for i in open_intents if i.kind is IntentKind.APPLY])
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
        """Take back every applied, reversible action of a decision (undo or expiry). Idempotent.

        Its actions not carried out are cancelled first, after any try of them in this process has ended.
        Those that were tried without a verified answer are taken back as well: the answer may have been
        lost after the hub acted, and taking back what did not happen changes nothing. An undo the hub
        does not verify stays open, and the convergence loop tries it again."""
        await self._settled(decision_id)
        now = self._now()
        tried = {i.id for i in await self._journal.cancel_unapplied(decision_id, now) if i.attempts > 0}
        intents = await self._journal.intents_for(decision_id)
        done_undos = {i.id for i in intents if i.kind is IntentKind.UNDO and i.state is IntentState.DONE}
        todo = [
            i
            for i in intents
            if i.kind is IntentKind.APPLY
            and (i.state is IntentState.DONE or i.id in tried)
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
        self.reserve([undo_id])
        try:
            if await self._journal.start_intent(undo_id, self._now()) is None:
                return None
            result = await self._take_back(applied)
            await self._finish(undo_id, result)
        finally:
            self._release([undo_id])
        self._tell_outstanding(result.action.hub, [IntentOutcome(undo_id, result)])
        return IntentOutcome(undo_id, result)

    async def _take_back(self, applied: StoredIntent) -> ActionResult:
        action = action_from_dict(json.loads(applied.action))
        hub = self._hubs.get(action.hub)
        restore = None if applied.restore is None else json.loads(applied.restore)
        if hub is None:
            return ActionResult.refused(action, f"hub {action.hub} is not known")
        if (since := hub.down_since) is not None:
            why = f"hub {action.hub} does not answer (since {_iso(since)}); tried again when it does"
            return ActionResult.failed(action, why, answered=False)
        self._note(action)
        return await hub.undo(action, restore)

    async def converge(self, hub_name: str, intents: Sequence[StoredIntent], *, stale_before: str) -> Converged:
        """One try at making a hub show what is in force: `intents` are that hub's apply intents of active
        decisions and its open undos. Read the hub back; record as verified what it shows (a try whose
        answer was lost may have taken effect); apply or take back what it does not show; the hub's answers
        read back again. A rotation is tried again only once the hub shows it did not happen (its key not
        revoked): never twice. Intents being carried out in this process, or claimed elsewhere less than
        `stale_before` ago, are left alone."""
        hub = self._hubs.get(hub_name)
        todo = [i for i in intents if i.id not in self._busy]
        if hub is None or not todo:
            return Converged(hub_name, [], [], None if hub else f"hub {hub_name} is not known")
        ids = [i.id for i in todo]
        self.reserve(ids)
        try:
            return await self._converge(hub, todo, stale_before)
        finally:
            self._release(ids)

    async def _converge(self, hub: Hub, todo: list[StoredIntent], stale_before: str) -> Converged:
        actions = {i.id: action_from_dict(json.loads(i.action)) for i in todo}
        try:
            shown = dict(zip(actions, await hub.in_effect(list(actions.values())), strict=True))
        except HubError as exc:
            return Converged(hub.name, [], [], str(exc))
        plan = _Plan.of(todo, actions, shown)
        now = self._now()
        confirmed = await self._journal.claim_intents(
            [i.id for i in plan.confirm], now, stale_before=stale_before, attempt=False
        )
        tried = await self._journal.claim_intents(
            [i.id for i in plan.apply + plan.undo], now, stale_before=stale_before
        )
        mine = {i.id for i in confirmed + tried}
        outcomes = [IntentOutcome(i.id, _confirmed(actions[i.id], i, hub.name)) for i in plan.confirm if i.id in mine]
        to_apply = [i for i in plan.apply if i.id in mine]
        if to_apply:
            for i in to_apply:
                self._note(actions[i.id])
            results = await hub.apply([actions[i.id] for i in to_apply])
            outcomes += [IntentOutcome(i.id, r) for i, r in zip(to_apply, results, strict=True)]
        for undo in (i for i in plan.undo if i.id in mine):
            applied = await self._journal.intent(undo.id.removesuffix(".undo"))
            result = (
                ActionResult.refused(actions[undo.id], "the action it takes back is not in the journal")
                if applied is None
                else await self._take_back(applied)
            )
            outcomes.append(IntentOutcome(undo.id, result))
        outcomes += [IntentOutcome(i.id, _unknown(actions[i.id])) for i in plan.unknown]
        await self._journal.finish_intents(
            [_finished(o.intent_id, o.result, o.result.restore) for o in outcomes], self._now()
        )
        drifted = [(i, why) for i, why in plan.drifted if i.id in mine]
        return Converged(hub.name, outcomes, drifted)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _state_of(result: ActionResult) -> IntentState:
    """What a try's result makes of its intent: done only when verified; refused before any hub, for
    good; otherwise outstanding: failed when the hub said no, pending when it did not answer or its
    read-back does not show the effect yet."""
    if result.ok and result.verified:
        return IntentState.DONE
    if not result.attempted:
        return IntentState.REFUSED
    if result.ok or not result.answered:
        return IntentState.PENDING
    return IntentState.FAILED


def _finished(intent_id: str, result: ActionResult, restore: object) -> FinishedIntent:
    at = None if result.verified_at is None else datetime.fromtimestamp(result.verified_at, UTC).isoformat()
    return FinishedIntent(
        intent_id,
        _state_of(result),
        result.detail,
        result.verified,
        None if restore is None else json.dumps(restore, sort_keys=True),
        at,
    )


def _confirmed(action: Action, intent: StoredIntent, hub: str) -> ActionResult:
    if intent.kind is IntentKind.UNDO:
        detail = f"verified: {hub} shows it taken back"
    elif intent.state is IntentState.DONE:
        detail = "verified"
    else:
        detail = f"verified by reading {hub} back, after: {intent.result or 'no answer'}"
    return ActionResult.applied(action, verified=True, detail=detail, verified_at=time.time())


def _unknown(action: Action) -> ActionResult:
    why = (
        f"{action.hub} cannot tell whether key {action.peer_key} was revoked (its hub agent predates the"
        " `revoked` operation): a rotation is not tried again blindly; upgrade the agent"
    )
    return ActionResult.failed(action, why, answered=False)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one convergence try does with each intent, from what the hub showed."""

    confirm: list[StoredIntent]  # the hub shows it (an apply in effect, or an undo's action taken back)
    apply: list[StoredIntent]
    undo: list[StoredIntent]
    unknown: list[StoredIntent]  # a rotation the hub cannot read back: not tried blindly
    drifted: list[tuple[StoredIntent, str]]

    @classmethod
    def of(cls, todo: list[StoredIntent], actions: Mapping[str, Action], shown: Mapping[str, bool | None]) -> _Plan:
        plan = cls([], [], [], [], [])
        for i in todo:
            action, effect = actions[i.id], shown[i.id]
            if i.kind is IntentKind.UNDO:
                (plan.confirm if effect is False else plan.undo).append(i)
                continue
            verified = i.state is IntentState.DONE and bool(i.verified)
            if effect is True:
                if not verified:
                    plan.confirm.append(i)
            elif effect is False:
                if verified:
                    plan.drifted.append((i, _gone(action)))
                plan.apply.append(i)
            elif not verified:
                if action.type is ActionType.ROTATE_KEY:
                    plan.unknown.append(i)
                else:  # a flow kill, or a hub that cannot read back: carrying it out again is harmless
                    plan.apply.append(i)
        return plan


def _gone(action: Action) -> str:
    if action.peer_key is not None:
        return "the peer is back on the hub"
    if action.type is ActionType.DELETE_ELEMENT:
        return f"{action.address} is back in {action.set_name}"
    return f"{action.address} is missing from {action.set_name}"


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
