"""A decision's life after it is made: approval, undo, expiry. Each step is a compare-and-set on the
decision's state in the journal, so two operators (or an operator and the expiry) cannot both act."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from responder.core.approvals import TIMEOUT_ACTOR, ApprovalTimeout, OnTimeout, timeout_step
from responder.core.decisions import Lift, action_from_dict
from responder.core.engine import Engine
from responder.executor import Executor, IntentOutcome
from responder.journal import DecisionRecord, DecisionState, Intent, IntentKind, IntentState, Journal
from responder.notify.about import decision_notice, enforced_notices
from responder.notify.notice import NoNotices, NoticeKind, Notices
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class LifecycleError(Exception):
    """An operator request that cannot be done in the decision's current state (answered 409)."""


class Lifecycle:
    def __init__(
        self,
        journal: Journal,
        executor: Executor,
        engine: Engine,
        clock: Callable[[], datetime],
        metrics: Metrics,
        *,
        notices: Notices | None = None,
    ) -> None:
        self._notices: Notices = notices or NoNotices()
        self._journal = journal
        self._executor = executor
        self._engine = engine
        self._clock = clock
        self._metrics = metrics

    async def approve(self, decision_id: str, actor: str) -> None:
        decision = await self._journal.decision(decision_id)
        if decision is None:
            raise LifecycleError(f"no decision {decision_id}")
        if not await self._journal.transition_decision(
            decision_id, [DecisionState.AWAITING_APPROVAL], DecisionState.ACTIVE
        ):
            raise LifecycleError(f"decision {decision_id} is {decision.state.value}, not awaiting approval")
        now = self._clock()
        ttl = json.loads(decision.body).get("ttl_s")
        await self._journal.set_expiry(decision_id, now.timestamp() + ttl if ttl else None)
        await self._journal.set_intents_state(decision_id, IntentState.AWAITING_APPROVAL, IntentState.PENDING)
        await self._journal.audit(now.isoformat(), actor, "approve", decision_id, {})
        self._tell(NoticeKind.APPROVED, decision, actor, DecisionState.ACTIVE)
        intents = [i for i in await self._journal.intents_for(decision_id) if i.kind is IntentKind.APPLY]
        # Without the delivery's trace: the approval is a request of its own, maybe hours later.
        outcomes = await self._executor.execute([Intent(i.id, action_from_dict(json.loads(i.action))) for i in intents])
        for notice in enforced_notices(outcomes, {decision.id: decision}, self._clock(), actor):
            self._notices.emit(notice)

    def _tell(
        self, kind: NoticeKind, decision: DecisionRecord, actor: str, state: DecisionState, **detail: Any
    ) -> None:
        self._notices.emit(
            decision_notice(
                kind,
                at=self._clock(),
                decision_id=decision.id,
                subject=decision.subject,
                response=decision.response,
                body=decision.body,
                state=state.value,
                actor=actor,
                **detail,
            )
        )

    async def reject(self, decision_id: str, actor: str, detail: dict[str, Any] | None = None) -> None:
        """Refuse a decision that waits for approval (nothing of it ran); unlike `undo`, never one in force,
        even one approved a moment before: an approver may reject, only an admin may undo."""
        decision = await self._journal.decision(decision_id)
        if decision is None:
            raise LifecycleError(f"no decision {decision_id}")
        waiting = [DecisionState.AWAITING_APPROVAL]
        if not await self._journal.transition_decision(decision_id, waiting, DecisionState.REJECTED):
            raise LifecycleError(f"decision {decision_id} is {decision.state.value}, not awaiting approval")
        await self._taken_back(decision, actor, DecisionState.REJECTED, detail)

    async def undo(self, decision_id: str, actor: str, detail: dict[str, Any] | None = None) -> None:
        """Take a decision back (or reject it, while it waits for approval); `detail` goes to the audit log."""
        decision = await self._journal.decision(decision_id)
        if decision is None:
            raise LifecycleError(f"no decision {decision_id}")
        waiting = decision.state is DecisionState.AWAITING_APPROVAL
        target = DecisionState.REJECTED if waiting else DecisionState.UNDONE
        if not await self._journal.transition_decision(
            decision_id, [DecisionState.ACTIVE, DecisionState.AWAITING_APPROVAL], target
        ):
            raise LifecycleError(f"decision {decision_id} is {decision.state.value}: nothing to undo")
        await self._taken_back(decision, actor, target, detail)

    async def _taken_back(
        self, decision: DecisionRecord, actor: str, target: DecisionState, detail: dict[str, Any] | None
    ) -> None:
        """What follows a decision moved to `target` (undone or rejected): its waiting intents cancelled, the
        audit entry, what it did on the hubs and what it had replaced taken back."""
        await self._journal.set_intents_state(decision.id, IntentState.AWAITING_APPROVAL, IntentState.CANCELLED)
        await self._journal.audit(self._clock().isoformat(), actor, target.value, decision.id, detail or {})
        undone = await self._executor.undo_decision(decision.id)
        kind = NoticeKind.REJECTED if target is DecisionState.REJECTED else NoticeKind.UNDONE
        if detail and "lifted_by" in detail:
            kind = NoticeKind.LIFTED
        hubs = _verified_by_hub(undone)
        self._tell(kind, decision, actor, target, **({"hubs": hubs} if hubs else {}))
        await self._undo_replaced(decision.subject, actor)
        self._engine.release(decision.subject, decision.response)

    async def lift(self, lift: Lift) -> list[str]:
        """The policy takes the subject's live decisions of `lift.response` back (a person reactivated in
        the IdP): each is undone as an operator's undo would be, attributed to the policy and the event.
        The ids undone; none when there were none (the lift is said whether or not any was in force)."""
        undone: list[str] = []
        for decision in await self._journal.live_decisions(lift.subject):
            if decision.response != lift.response:
                continue
            try:
                await self.undo(decision.id, lift.actor, {"lifted_by": lift.signal, "event": lift.event_id})
            except LifecycleError:
                continue  # taken back meanwhile (an operator, the expiry): nothing is left to do
            undone.append(decision.id)
            log.info(
                "decision %s (%s on %s) lifted by %s: %s", decision.id, lift.response, lift.subject, lift.signal,
                lift.reason, extra={"decision": decision.id},
            )  # fmt: skip
        return undone

    async def _undo_replaced(self, subject: str, actor: str) -> None:
        """The weaker decisions a taken-back one had replaced (a quarantine before a cut-off) still have
        their actions on the hubs: take those back too, or the undo would leave the person half-blocked."""
        for earlier in await self._journal.decisions(DecisionState.REPLACED, 1000):
            if earlier.subject == subject and await self._journal.transition_decision(
                earlier.id, [DecisionState.REPLACED], DecisionState.UNDONE
            ):
                await self._journal.audit(self._clock().isoformat(), actor, "undone_with_replacement", earlier.id, {})
                await self._executor.undo_decision(earlier.id)

    async def expire_due(self) -> int:
        now = self._clock()
        expired = 0
        for decision in await self._journal.expired_decisions(now.timestamp()):
            if await self._journal.transition_decision(decision.id, [DecisionState.ACTIVE], DecisionState.EXPIRED):
                await self._journal.audit(now.isoformat(), "responder", "expired", decision.id, {})
                hubs = _verified_by_hub(await self._executor.undo_decision(decision.id))
                self._tell(
                    NoticeKind.EXPIRED, decision, "responder", DecisionState.EXPIRED, **({"hubs": hubs} if hubs else {})
                )
                await self._undo_replaced(decision.subject, "responder")
                self._engine.release(decision.subject, decision.response)
                log.info(
                    "decision %s (%s on %s) expired and was undone", decision.id, decision.response, decision.subject
                )
                expired += 1
        return expired

    async def time_out_approvals(self) -> int:
        """Act on the decisions that waited for approval longer than their response allows (`approval_timeout`):
        reject, approve or escalate them; an escalated one is rejected after a second wait as long. How many
        were acted on."""
        now = self._clock()
        acted = 0
        for decision in await self._journal.decisions(DecisionState.AWAITING_APPROVAL, 1000):
            body = json.loads(decision.body)
            if not body.get("approval_timeout"):
                continue
            timeout = ApprovalTimeout.from_dict(body["approval_timeout"])
            escalated = [a for a in await self._journal.audit_trail(decision.id) if a.kind == "escalated"]
            escalated_at = datetime.fromisoformat(escalated[0].at).timestamp() if escalated else None
            waiting_since = datetime.fromisoformat(decision.created_at).timestamp()
            step = timeout_step(timeout, waiting_since, escalated_at, now.timestamp())
            if step is None:
                continue
            try:
                await self._time_out(decision, step, timeout, now)
            except LifecycleError:
                continue  # an operator answered meanwhile: theirs is the answer
            acted += 1
        return acted

    async def _time_out(
        self, decision: DecisionRecord, step: OnTimeout, timeout: ApprovalTimeout, now: datetime
    ) -> None:
        detail: dict[str, Any] = {"after_s": timeout.after_s}
        if step is OnTimeout.APPROVE:
            await self.approve(decision.id, TIMEOUT_ACTOR)
        elif step is OnTimeout.REJECT:
            await self.reject(decision.id, TIMEOUT_ACTOR, detail)
        else:
            channel = timeout.escalate_to or ""
            await self._journal.audit(
                now.isoformat(), TIMEOUT_ACTOR, "escalated", decision.id, detail | {"to": channel}
            )
            # With the decision's why and what, as its first message had: the next channel starts from nothing.
            self._notices.emit(
                decision_notice(
                    NoticeKind.ESCALATED, at=now, decision_id=decision.id, subject=decision.subject,
                    response=decision.response, body=decision.body, state=decision.state.value,
                    actor=TIMEOUT_ACTOR, channels=(channel,), reason=f"no answer within {timeout.after_s:g}s",
                    **detail,
                )
            )  # fmt: skip
        log.info("decision %s waited %ss for approval: %s", decision.id, timeout.after_s, step.value)

    async def resume(self) -> None:
        """Finish undoing decisions that ended while a previous run was undoing them."""
        for state in (DecisionState.UNDONE, DecisionState.EXPIRED):
            for decision in await self._journal.decisions(state, 1000):
                await self._executor.undo_decision(decision.id)

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.expire_due()
                await self.time_out_approvals()
                self._metrics.active_decisions.set(await self._journal.count_decisions(DecisionState.ACTIVE))
            except Exception:
                log.exception("expiry pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


def _verified_by_hub(outcomes: list[IntentOutcome]) -> dict[str, bool]:
    """Per hub, whether every action taken back there was verified taken back."""
    hubs: dict[str, bool] = {}
    for o in outcomes:
        hub = o.result.action.hub
        hubs[hub] = hubs.get(hub, True) and o.result.ok and o.result.verified
    return hubs
