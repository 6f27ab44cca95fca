"""Convergence: a decision in force is enforced until the hubs show it, through every outage.

What must hold on the hubs is in the journal: every action of every active decision (verified once or not
yet), and every undo not yet verified. The reconciler brings each hub there, one try at a time
(`Executor.converge`: read back, apply or take back what is missing, read back), and records what is true.

- An action not verified (the hub did not answer, refused, or does not show it) is tried again with back-off
  and jitter (`enforcement.retry_min_s` doubling up to `retry_max_s`) while the hub answers.
- While a hub does not answer, its SSH port is probed every `enforcement.probe_interval_s`; the moment it
  answers (a probe, the hub monitor, or any call that gets through), everything outstanding there is tried
  at once. Each hub is tried on its own: one that is down delays no other.
- Every `reconcile_interval_s`, every hub is read back in full and what drifted (a reboot, a ruleset
  reloaded from its file, an interface restarted) is re-applied and reported as drift: log, metric, audit.

What is outstanding shows as it is: the intents say `pending` or `failed`, with the reason, since when and
the next try; `responder_unenforced_actions` and `responder_unenforced_oldest_seconds` by hub; `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from responder.config import Enforcement
from responder.core.actions import Action, ActionType
from responder.core.decisions import action_from_dict
from responder.executor import Converged, Executor, IntentOutcome
from responder.journal import IntentKind, IntentState, Journal, JournalUnavailable, StoredIntent
from responder.notify import Notice, NoticeKind, Notices
from responder.notify.about import decision_notice
from responder.notify.notice import NoNotices
from responder.pep import Hub
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
_CONTAINING = frozenset(ActionType) - {ActionType.KILL_FLOWS}  # see Executor._measure
_PLAN_EVERY_S = 10.0  # while a hub is down, its intents' next try is written at most this often


@dataclass(frozen=True, slots=True)
class Drift:
    hub: str
    action: Action
    detail: str


@dataclass(frozen=True, slots=True)
class HubBacklog:
    """What is outstanding on one hub, for /readyz and the metrics."""

    actions: int
    oldest_s: float
    down_since: float | None


@dataclass(slots=True)
class _Retry:
    """When a hub is tried next, and how many tries in a row have left something outstanding."""

    due: float  # monotonic
    tries: int = 0
    planned_at: float = 0.0  # monotonic time the next try was last written to the journal


def settled(intent: StoredIntent) -> bool:
    """Nothing to do for it unless its hub drifts: an apply verified in effect."""
    return intent.kind is IntentKind.APPLY and intent.state is IntentState.DONE and bool(intent.verified)


class Reconciler:
    def __init__(
        self,
        journal: Journal,
        executor: Executor,
        hubs: Mapping[str, Hub],
        clock: Callable[[], datetime],
        metrics: Metrics,
        *,
        settings: Enforcement | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        notices: Notices | None = None,
    ) -> None:
        self._notices = notices or NoNotices()
        self._journal = journal
        self._executor = executor
        self._hubs = hubs
        self._clock = clock
        self._metrics = metrics
        self._settings = settings or Enforcement()
        self._monotonic = monotonic
        self._jitter = jitter
        self._retry: dict[str, _Retry] = {}
        self._trying: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self.backlog: dict[str, HubBacklog] = {}
        self.drifts: list[Drift] = []  # the latest, for tests and `reconcile_once`
        executor.when_outstanding(self.outstanding)
        for hub in hubs.values():
            hub.when_answering_again(self.answering)

    # -- what tells it ---------------------------------------------------------------------------------

    def outstanding(self, hub: str) -> None:
        """Something on `hub` ended a try unverified: try it again (first after `retry_min_s`)."""
        if hub not in self._retry:
            self._retry[hub] = _Retry(self._monotonic() + self._backoff(0))
            self._wake.set()

    def answering(self, hub: str) -> None:
        """The hub answers again after an outage: try everything outstanding there now."""
        log.info("%s answers again: trying what is outstanding there now", hub)
        retry = self._retry.setdefault(hub, _Retry(0.0))
        retry.due, retry.tries = 0.0, 0
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Until `stop`: every hub in full every `interval_s`, and outstanding ones as they fall due."""
        next_full = self._monotonic() + interval_s
        try:
            while not stop.is_set():
                now = self._monotonic()
                full = now >= next_full
                if full:
                    next_full = now + interval_s
                try:
                    await self._round(full)
                except JournalUnavailable:
                    pass  # the journal says why, once a minute; the next round reads it again
                except Exception:
                    log.exception("reconcile round failed; trying again shortly")
                await self._sleep(stop, next_full)
        finally:
            for task in self._trying.values():
                task.cancel()
            if self._trying:
                await asyncio.gather(*self._trying.values(), return_exceptions=True)

    async def _sleep(self, stop: asyncio.Event, next_full: float) -> None:
        due = [r.due for h, r in self._retry.items() if h not in self._trying]
        wait = max(0.0, min([next_full, *due]) - self._monotonic())
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=min(wait, 60.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _round(self, full: bool) -> None:
        """Start a try on every hub that is due and not being tried (a full round: every hub)."""
        in_force = self._in_force(await self._journal.intents_in_force())
        self._publish(in_force)
        now = self._monotonic()
        for name, intents in in_force.items():
            outstanding = [i for i in intents if not settled(i) and not self._executor.busy(i.id)]
            retry = self._retry.get(name)
            if not outstanding and not full:
                continue
            if outstanding and retry is None:
                retry = self._retry[name] = _Retry(now)
            if name in self._trying or (not full and retry is not None and retry.due > now):
                continue
            task = asyncio.get_running_loop().create_task(self._try(name, intents, full), name=f"converge {name}")
            self._trying[name] = task
            task.add_done_callback(self._done)
        for name in [h for h in self._retry if h not in in_force and h not in self._trying]:
            del self._retry[name]  # nothing left there (a decision ended, or someone else converged it)

    def _done(self, task: asyncio.Task[None]) -> None:
        for name in [n for n, t in self._trying.items() if t is task]:
            del self._trying[name]
        self._wake.set()

    async def reconcile_once(self) -> list[Drift]:
        """One full round now, waiting for every hub's try: read back, re-apply, report."""
        self.drifts = []
        in_force = self._in_force(await self._journal.intents_in_force())
        self._publish(in_force)
        await asyncio.gather(*(self._try(name, intents, True) for name, intents in in_force.items()))
        return list(self.drifts)

    def _in_force(self, intents: Sequence[StoredIntent]) -> dict[str, list[StoredIntent]]:
        """By hub; without applies whose kernel timeout has lifted them, as intended."""
        now = self._clock().timestamp()
        out: dict[str, list[StoredIntent]] = {}
        for intent in intents:
            action = action_from_dict(json.loads(intent.action))
            if action.hub not in self._hubs:
                continue
            if settled(intent) and action.type is ActionType.KILL_FLOWS:
                continue  # flows are not state to keep; the set changes stop new ones
            if (
                settled(intent)
                and action.ttl_s
                and datetime.fromisoformat(intent.updated_at).timestamp() + action.ttl_s <= now
            ):
                continue
            out.setdefault(action.hub, []).append(intent)
        return out

    # -- one hub ---------------------------------------------------------------------------------------

    async def _try(self, name: str, intents: list[StoredIntent], full: bool) -> None:
        hub = self._hubs[name]
        todo = intents if full else [i for i in intents if not settled(i)]
        try:
            if hub.down_since is not None and not await hub.probe(self._probe_timeout):
                self._metrics.convergence_tries.labels(name, "not answering").inc()
                # Enforcement is off there until it answers; the notifier says so once a window, not every probe.
                since = datetime.fromtimestamp(hub.down_since, UTC).isoformat(timespec="seconds")
                self._notices.emit(
                    Notice(
                        NoticeKind.ENFORCEMENT_OFF,
                        self._clock(),
                        f"hub:{name}",
                        detail={"reason": f"hub {name} does not answer since {since}", "hubs": {name: False}},
                    )
                )
                await self._reschedule(name, todo, answering=False)
                return
            stale = (self._clock() - timedelta(seconds=self._stale_after)).isoformat()
            converged = await self._executor.converge(name, todo, stale_before=stale)
            await self._report(converged, todo)
            await self._reschedule(name, todo, answering=converged.unreadable is None, converged=converged)
        except asyncio.CancelledError:
            raise
        except JournalUnavailable:
            await self._reschedule(name, todo, answering=True)
        except Exception:
            log.exception("converging %s failed; trying again later", name)
            await self._reschedule(name, todo, answering=True)

    async def _reschedule(
        self, name: str, todo: list[StoredIntent], *, answering: bool, converged: Converged | None = None
    ) -> None:
        if converged is not None and not converged.outstanding:
            self._retry.pop(name, None)
            self._metrics.convergence_tries.labels(name, "converged").inc()
            return
        now = self._monotonic()
        retry = self._retry.setdefault(name, _Retry(now))
        hub = self._hubs[name]
        if not answering or hub.down_since is not None:
            delay = self._settings.probe_interval_s * (0.5 + self._jitter() / 2)
            if converged is not None:
                self._metrics.convergence_tries.labels(name, "unreadable").inc()
        else:
            retry.tries += 1
            delay = self._backoff(retry.tries)
            self._metrics.convergence_tries.labels(name, "outstanding").inc()
        retry.due = now + delay
        if converged is None and now - retry.planned_at < _PLAN_EVERY_S:
            return  # a probe that failed: the journal already says when the next try is, near enough
        retry.planned_at = now
        at = (self._clock() + timedelta(seconds=delay)).isoformat()
        with contextlib.suppress(Exception):  # the journal's own error line says why; the next try writes again
            await self._journal.plan_next_try([i.id for i in todo if not settled(i)], at)

    def _backoff(self, tries: int) -> float:
        s = self._settings
        return float(min(s.retry_max_s, s.retry_min_s * 2**tries) * (0.5 + self._jitter() / 2))

    @property
    def _probe_timeout(self) -> float:
        return max(self._settings.probe_interval_s, 1.0)

    @property
    def _stale_after(self) -> float:
        """A claim older than this was a try that never ended (its process died)."""
        s = self._settings
        return 2 * (s.connect_timeout_s + s.operation_timeout_s) + 10

    async def _report(self, converged: Converged, todo: list[StoredIntent]) -> None:
        name = converged.hub
        if converged.unreadable is not None:
            log.debug("reconcile: cannot read %s back: %s", name, converged.unreadable)
            return
        results = {o.intent_id: o.result for o in converged.outcomes}
        for intent, why in converged.drifted:
            result = results.get(intent.id)
            repaired = result is not None and result.ok and result.verified
            state = "re-asserted" if repaired else f"NOT repaired: {result.detail if result else 'not tried'}"
            action = action_from_dict(json.loads(intent.action))
            drift = Drift(name, action, f"{why}; {state}")
            self.drifts.append(drift)
            self._metrics.drift.labels(name, action.type.value).inc()
            log.warning("drift on %s: %s — %s; %s", name, action.describe(), why, state)
            await self._journal.audit(
                self._clock().isoformat(), "reconciler", "drift", intent.decision_id,
                {"intent": intent.id, "hub": name, "action": action.describe(), "why": why, "repaired": repaired},
            )  # fmt: skip
            if (decision := await self._journal.decision(intent.decision_id)) is not None:
                self._notices.emit(
                    decision_notice(
                        NoticeKind.DRIFT,
                        at=self._clock(),
                        decision_id=decision.id,
                        subject=decision.subject,
                        response=decision.response,
                        body=decision.body,
                        state=decision.state.value,
                        actor="reconciler",
                        hubs={name: repaired},
                        reason=f"{action.describe()}: {why}; {state}",
                    )
                )
        before = {i.id: i for i in todo}
        converged_now = [
            o for o in converged.outcomes if o.result.ok and o.result.verified and not settled(before[o.intent_id])
        ]
        for o in converged_now:
            was = before[o.intent_id]
            if was.kind is IntentKind.APPLY and was.pending_since is not None:
                log.info(
                    "%s verified on %s after %s since %s (%d tries)", o.intent_id, name, was.result or "no answer",
                    was.pending_since, was.attempts + 1,
                )  # fmt: skip
        await self._tell_verified(name, [before[o.intent_id] for o in converged_now], converged)
        await self._measure(converged_now, before)

    async def _tell_verified(self, hub: str, verified: list[StoredIntent], converged: Converged) -> None:
        """A decision told "NOT verified" on a hub is told again once everything of it there is verified."""
        late = {i.decision_id for i in verified if i.kind is IntentKind.APPLY and i.pending_since is not None}
        open_ = {o.intent_id.rsplit(".", 1)[0] for o in converged.outcomes if not (o.result.ok and o.result.verified)}
        for decision_id in sorted(late - open_):
            if (decision := await self._journal.decision(decision_id)) is None:
                continue
            self._notices.emit(
                decision_notice(
                    NoticeKind.ENFORCED, at=self._clock(), decision_id=decision.id, subject=decision.subject,
                    response=decision.response, body=decision.body, state=decision.state.value,
                    actor="reconciler", hubs={hub: True}, verified=True,
                    reason=f"verified on {hub} once it answered again",
                )
            )  # fmt: skip

    async def _measure(self, verified: list[IntentOutcome], before: Mapping[str, StoredIntent]) -> None:
        """Containment of decisions whose last outstanding containing action this try verified: from the
        delivery's arrival, the outage included."""
        done: dict[str, float] = {}
        for o in verified:
            intent = before[o.intent_id]
            if intent.kind is IntentKind.APPLY and o.result.action.type in _CONTAINING:
                done[intent.decision_id] = max(done.get(intent.decision_id, 0.0), o.result.verified_at or time.time())
        if not done:
            return
        arrived = await self._journal.arrivals(list(done))
        for decision_id, at in done.items():
            rest = [
                i
                for i in await self._journal.intents_for(decision_id)
                if i.kind is IntentKind.APPLY
                and i.state is not IntentState.CANCELLED
                and action_from_dict(json.loads(i.action)).type in _CONTAINING
            ]
            if all(settled(i) for i in rest) and decision_id in arrived:
                start = datetime.fromisoformat(arrived[decision_id]).timestamp()
                self._metrics.containment_seconds.observe(max(0.0, at - start))

    # -- what shows ------------------------------------------------------------------------------------

    def _publish(self, in_force: Mapping[str, list[StoredIntent]]) -> None:
        now = self._clock()
        backlog: dict[str, HubBacklog] = {}
        for name, hub in self._hubs.items():
            outstanding = [i for i in in_force.get(name, []) if not settled(i)]
            oldest = 0.0
            for i in outstanding:
                since = datetime.fromisoformat(i.pending_since or i.created_at)
                oldest = max(oldest, (now - since).total_seconds())
            self._metrics.unenforced.labels(name).set(len(outstanding))
            self._metrics.unenforced_oldest.labels(name).set(round(oldest, 3))
            self._metrics.hub_down.labels(name).set(1 if hub.down_since is not None else 0)
            if outstanding or hub.down_since is not None:
                backlog[name] = HubBacklog(len(outstanding), round(oldest, 1), hub.down_since)
        self.backlog = backlog

    def readiness_detail(self) -> dict[str, object]:
        """Per hub with something outstanding or not answering: how much, since when."""
        return {
            name: {
                "unenforced_actions": b.actions,
                "oldest_s": b.oldest_s,
                "down_since": None
                if b.down_since is None
                else datetime.fromtimestamp(b.down_since, UTC).isoformat(timespec="seconds"),
            }
            for name, b in sorted(self.backlog.items())
        }
