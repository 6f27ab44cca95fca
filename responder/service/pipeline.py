"""One event's way through the service: journal (pending) → decide → journal (decisions and intents,
with the event's processed mark, in one transaction) → the executor: enforce → verify → journal (results).

The decision engine keeps risk in memory; on start it is rebuilt by replaying the processed events of the
longest rule window through it (the engine is deterministic, so this reproduces the same decisions, ids
included, which the journal already holds), then responses that have ended are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, Tracer
from pydantic import ValidationError

from responder.core.decisions import Decision, Lift, Outcome
from responder.core.engine import Engine
from responder.core.events import MAX_CLOCK_SKEW, Event, bounded_by_receipt
from responder.executor import Executor, intent_records, intents_of
from responder.ingest.handoff import ParsedEvents
from responder.journal import (
    DecisionRecord,
    DecisionState,
    EventOutcome,
    Intent,
    IntentRecord,
    IntentState,
    Journal,
    JournalUnavailable,
    Lane,
    StoredEvent,
)
from responder.notify import Notice, NoticeKind, Notices
from responder.notify.about import decision_notice, enforced_notices
from responder.notify.notice import NoNotices
from responder.service.guard import BlastRadius
from responder.telemetry.metrics import Metrics
from responder.telemetry.tracing import carrier_of_current, context_from

log = logging.getLogger(__name__)
_PAUSE_S, _MAX_PAUSE_S = 0.5, 10.0  # between tries while the journal cannot store
# A bulk batch gives the loop a turn this often (~5 ms of deciding), so an urgent delivery is stored and
# stops the batch instead of waiting for all of it.
_YIELD_EVERY = 50
ENDED = (DecisionState.UNDONE, DecisionState.EXPIRED, DecisionState.REJECTED)
LIVE = (DecisionState.ACTIVE, DecisionState.AWAITING_APPROVAL)


class Pipeline:
    def __init__(
        self,
        *,
        journal: Journal,
        engine: Engine,
        executor: Executor,
        radius: BlastRadius,
        clock: Callable[[], datetime],
        owner: str,
        metrics: Metrics,
        dry_run: bool = False,
        max_parallel: int = 64,
        wake: asyncio.Event | None = None,
        tracer: Tracer | None = None,
        parsed: ParsedEvents | None = None,
        max_clock_skew: timedelta = MAX_CLOCK_SKEW,
        lift: Callable[[Lift], Awaitable[object]] | None = None,
        notices: Notices | None = None,
        urgent: asyncio.Event | None = None,
    ) -> None:
        self._urgent = urgent or asyncio.Event()  # set by the hand-off when an urgent event is stored
        self._notices = notices or NoNotices()
        self._lift = lift
        self._parsed = parsed or ParsedEvents(limit=0)
        self._max_clock_skew = max_clock_skew
        self._tracer = tracer or trace.NoOpTracer()
        self._traced = not isinstance(self._tracer, trace.NoOpTracer)
        self._journal = journal
        self._engine = engine
        self._executor = executor
        self._radius = radius
        self._clock = clock
        self._owner = owner
        self._metrics = metrics
        self._dry_run = dry_run
        self._slots = asyncio.Semaphore(max_parallel)
        # Urgent events' enforcement has slots of its own: it never queues behind a bulk burst's quarantines.
        self._urgent_slots = asyncio.Semaphore(max_parallel)
        self._running: set[asyncio.Task[None]] = set()
        self.wake = wake or asyncio.Event()
        self._rebuild_after: timedelta | None = None
        self._full_since: str | None = None  # the event on which the engine last became full (logged once)

    async def rebuild(self, horizon: timedelta) -> int:
        """Replay the recent processed events into the engine; release the responses that ended. An
        event that does not load is quarantined, and the rest replayed: one bad row must not stop every
        start for the length of the rule window."""
        now = self._clock()
        stored = await self._journal.processed_events_since((now - horizon).isoformat())
        for s in stored:
            if (event := await self._load(s)) is not None:
                # Intake bounds an event's time by its receipt; a journal written before that may hold
                # one from the future, which would blind the engine again on every start: not past now.
                self._count_subjects(self._engine.process(bounded_by_receipt(event, now, self._max_clock_skew)))
        live = {(d.subject, d.response) for state in LIVE for d in await self._journal.decisions(state, 100_000)}
        for state in ENDED:
            for d in await self._journal.decisions(state, 100_000):
                if (d.subject, d.response) not in live:
                    self._engine.release(d.subject, d.response)
        return len(stored)

    async def run(self, stop: asyncio.Event) -> None:
        """Process pending events until `stop`; then let the intents being carried out finish."""
        pause = _PAUSE_S
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    if await self._next_batch():
                        pause = _PAUSE_S
                        continue
                except JournalUnavailable:
                    # Nothing of the batch was stored, and the engine counted it already: it is rebuilt
                    # from the journal before the batch is decided again. The journal logs why.
                    self._rebuild_after = timedelta(seconds=self._engine.rules.horizon_s)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
                    pause = min(pause * 2, _MAX_PAUSE_S)
                    continue
                waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            await self.drain()

    async def _next_batch(self) -> bool:
        """Decide this owner's next pending events, if any; whether there were."""
        if self._rebuild_after is not None:
            horizon = self._rebuild_after
            self._engine.reset()
            log.info("rebuilt the engine from %d events", await self.rebuild(horizon))
            self._rebuild_after = None
        # Urgent events (and what of their subjects came before them) first: a cut-off never waits for a
        # SIEM backlog to be worked through, and every subject's events are still decided in order.
        self._urgent.clear()
        batch = await self._journal.urgent_events(self._owner, limit=500, bodies=False)
        batch = batch or await self._journal.pending_events(self._owner, limit=500, bodies=False)
        if not batch:
            return False
        kept = {s.seq: e for s in batch if (e := self._parsed.take(s.seq)) is not None}
        if len(kept) < len(batch):  # not all in memory: those come from the journal
            bodies = await self._journal.event_bodies([s.seq for s in batch if s.seq not in kept])
            batch = [replace(s, body=bodies.get(s.seq, s.body)) for s in batch]
        await self.process_batch(batch, kept)
        return True

    def request_rebuild(self, horizon: timedelta) -> None:
        """Rebuild the engine from the journal before the next batch (this instance's subjects changed)."""
        self._rebuild_after = horizon
        self.wake.set()

    async def drain(self) -> None:
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def process_batch(self, batch: list[StoredEvent], kept: Mapping[int, Event] | None = None) -> None:
        """Decide each event in order, write every outcome in one transaction, then start enforcing: a
        burst costs one commit, not one per event, and nothing is enforced before it is journaled.
        `kept`: events already in memory (from this instance's hand-off), by sequence number."""
        kept = kept or {}
        planned: list[_Planned] = []
        in_batch: dict[str, list[DecisionRecord]] = {}
        bulk = all(s.lane is Lane.BULK for s in batch)
        for n, stored in enumerate(batch):
            if bulk and n and n % _YIELD_EVERY == 0:
                # Let the hand-off store what arrives meanwhile; if that is urgent, stop here: what is decided
                # is written, the rest stays pending (in order) and the next round takes the urgent first.
                await asyncio.sleep(0)
                if self._urgent.is_set():
                    self._keep_back(batch[n:], kept)
                    break
            with self._span(stored) as span:
                event = kept.get(stored.seq) or await self._load(stored)
                if event is None:
                    continue
                outcome = self._engine.process(event)
                self._note_subjects(outcome)
                if outcome.decisions or outcome.explanations:
                    span.set_attributes({
                        "responder.event.id": event.id, "responder.event.source": event.source.value,
                        "responder.event.type": event.type,
                        "responder.rules": sorted({r for x in outcome.explanations for r in x.matched}),
                        "responder.scores": [round(x.score, 1) for x in outcome.explanations],
                        "responder.decisions": [f"{d.id} {d.response}" for d in outcome.decisions],
                    })  # fmt: skip
                if outcome.lifts and self._lift is not None:
                    # What the batch decided before this event is written and started first, so the lift
                    # finds it in the journal; the lift runs before this event is marked processed, so a
                    # crash in between repeats it (undoing what is undone already changes nothing).
                    await self._write(planned)
                    planned, in_batch = [], {}
                    for lift in outcome.lifts:
                        await self._lift(lift)
                if not outcome.decisions:  # most of a SIEM burst: only the processed mark to write
                    planned.append(_Planned(EventOutcome(stored.seq), [], stored.received_at, [], {}, stored.lane))
                    continue
                carrier = carrier_of_current() if self._traced else stored.trace
                planned.append(await self._plan(stored, outcome.decisions, carrier, in_batch))
        self._metrics.tracked_subjects.set(self._engine.tracked)
        await self._write(planned)

    def _keep_back(self, rest: list[StoredEvent], kept: Mapping[int, Event]) -> None:
        """Events taken but not decided: back into memory for the next round, which reads the rest."""
        for stored in rest:
            if (event := kept.get(stored.seq)) is not None:
                self._parsed.put(stored.seq, event)

    async def _write(self, planned: list[_Planned]) -> None:
        """Journal the planned outcomes in one transaction, then start carrying out their intents."""
        if not planned:
            return
        written = await self._journal.record_outcomes([p.outcome for p in planned], self._clock().isoformat())
        for p, ok in zip(planned, written, strict=True):
            # Not written: processed already, by this instance before a crash or by another one.
            if not ok:
                continue
            for notice in p.notices:
                self._notices.emit(notice)
            if p.to_run:
                self._start(p.to_run, p.received_at, p.decided, urgent=p.lane is Lane.URGENT)

    def _count_subjects(self, outcome: Outcome) -> None:
        self._note_subjects(outcome)
        self._metrics.tracked_subjects.set(self._engine.tracked)

    def _note_subjects(self, outcome: Outcome) -> None:
        """Subjects refused, and the engine becoming full or not (logged once each way); the gauge of
        tracked subjects is set by the caller, once a batch."""
        if outcome.refused:
            self._metrics.subjects_refused.inc(len(outcome.refused))
        full = self._engine.full
        if full and self._full_since is None:
            self._full_since = outcome.event_id
            log.warning(
                "the engine tracks %d subjects (limits.max_subjects is %d): from event %s on, events below high"
                " severity add no new subject, and at the limit none do, until signals expire; raise the"
                " limit if this is genuine traffic", self._engine.tracked, self._engine.max_subjects, outcome.event_id,
            )  # fmt: skip
        elif not full and self._full_since is not None:
            log.info("the engine tracks %d subjects, below its limit again: new ones are added", self._engine.tracked)
            self._full_since = None

    async def _load(self, stored: StoredEvent) -> Event | None:
        """The stored event, or None when it does not load and was quarantined. Intake refuses what the
        journal could not read back, so this is a journal written before that, a bug or tampering."""
        try:
            return Event.model_validate_json(stored.body)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"] if exc.errors() else str(exc)
            log.error(  # noqa: TRY400 - the reason is the message; a traceback would only show this line
                "event %s (%s) in the journal does not load, quarantined: %s", stored.seq, stored.dedup_key, reason,
                extra={"event_seq": stored.seq, "dedup_key": stored.dedup_key},
            )  # fmt: skip
            await self._journal.quarantine_event(stored.seq, self._clock().isoformat(), reason)
            self._metrics.quarantined.inc()
            return None

    def _span(self, stored: StoredEvent) -> AbstractContextManager[Span]:
        """The event's decision, in the trace of its delivery; nothing when tracing is off, where a span
        costs about as much as the decision itself."""
        if not self._traced:
            return nullcontext(INVALID_SPAN)
        return self._tracer.start_as_current_span("decide", context=context_from(stored.trace))

    async def _plan(
        self,
        stored: StoredEvent,
        decisions: tuple[Decision, ...],
        carrier: Mapping[str, str],
        in_batch: dict[str, list[DecisionRecord]],
    ) -> _Planned:
        now = self._clock()
        records: list[DecisionRecord] = []
        intents: list[IntentRecord] = []
        replaced: list[str] = []
        to_run: list[Intent] = []
        notices: list[Notice] = []
        decided: dict[str, DecisionRecord] = {}
        for d in decisions:
            earlier = in_batch.setdefault(d.subject, [])
            live = [x for x in await self._journal.live_decisions(d.subject) if x.id not in replaced] + earlier
            if any(x.level >= d.level and x.id != d.id for x in live):
                # The journal knows of a response as strong in force (the engine's memory only reaches
                # back to its horizon): keep it, and do not stack a weaker one on top.
                continue
            replaced += [x.id for x in live if x.level < d.level]
            state, note = self._state(d)
            body = d.to_dict() | ({"dry_run_reason": note} if note else {})
            expires = now.timestamp() + d.ttl_s if d.ttl_s and state is DecisionState.ACTIVE else None
            record = DecisionRecord(
                id=d.id, subject=d.subject, response=d.response, level=d.level, state=state,
                created_at=now.isoformat(), expires_at=expires, body=json.dumps(body), trace=dict(carrier),
            )  # fmt: skip
            records.append(record)
            notices.append(self._decided(record, note))
            if state in LIVE:
                earlier[:] = [x for x in earlier if x.level >= d.level] + [record]
                waiting = state is DecisionState.AWAITING_APPROVAL
                # Intents to run now are written already claimed (running): one transaction fewer before
                # the hubs are touched. A crash leaves them open, and they are resumed like pending ones.
                made = intents_of(d.id, d.actions, carrier)
                intents += intent_records(
                    d.id, made, now.isoformat(), IntentState.AWAITING_APPROVAL if waiting else IntentState.RUNNING
                )
                if not waiting:
                    to_run += made
                    decided[d.id] = record
            self._metrics.decisions.labels(d.response, state.value).inc()
            log.info(
                "decision %s: %s on %s (score %.0f) -> %s", d.id, d.response, d.subject, d.score, state.value,
                extra={"decision": d.id, "event_seq": stored.seq},
            )  # fmt: skip
        outcome = EventOutcome(stored.seq, records, intents, replaced)
        return _Planned(outcome, to_run, stored.received_at, notices, decided, stored.lane)

    def _decided(self, record: DecisionRecord, note: str | None) -> Notice:
        kind = NoticeKind.AWAITING_APPROVAL if record.state is DecisionState.AWAITING_APPROVAL else NoticeKind.DECIDED
        return decision_notice(
            kind, at=self._clock(), decision_id=record.id, subject=record.subject, response=record.response,
            body=record.body, state=record.state.value, actor="policy", reason=note,
        )  # fmt: skip

    def _state(self, d: Decision) -> tuple[DecisionState, str | None]:
        if self._dry_run or d.dry_run:
            return DecisionState.DRY_RUN, "dry-run is on" if self._dry_run else "the rule is in dry-run"
        if (why := self._radius.admit(d.response, len(d.actions))) is not None:
            if self._radius.tripped:
                # Once per cool-down window (the notifier de-duplicates on the subject).
                self._notices.emit(
                    Notice(NoticeKind.ENFORCEMENT_OFF, self._clock(), "responder:blast-radius", detail={"reason": why})
                )
            return DecisionState.DRY_RUN, why
        if d.requires_approval:
            return DecisionState.AWAITING_APPROVAL, None
        return DecisionState.ACTIVE, None

    def _start(
        self, intents: list[Intent], received_at: str, decided: Mapping[str, DecisionRecord], *, urgent: bool
    ) -> None:
        self._executor.reserve([i.id for i in intents])  # before any await: an undo now waits for them
        slots = self._urgent_slots if urgent else self._slots
        task = asyncio.get_running_loop().create_task(self._carry_out(intents, received_at, decided, slots))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _carry_out(
        self,
        intents: list[Intent],
        received_at: str,
        decided: Mapping[str, DecisionRecord],
        slots: asyncio.Semaphore,
    ) -> None:
        """Hand the claimed intents to the executor, at most `max_parallel` events' worth at once per lane."""
        async with slots:
            try:
                outcomes = await self._executor.carry_out(intents, detected_at=received_at)
            except Exception:
                log.exception("enforcement failed; the intents stay open and are resumed")
                return
        for notice in enforced_notices(outcomes, decided, self._clock()):
            self._notices.emit(notice)


@dataclass
class _Planned:
    outcome: EventOutcome
    to_run: list[Intent]
    received_at: str
    notices: list[Notice]
    decided: dict[str, DecisionRecord]  # by id: those carried out now, for their `enforced` notice
    lane: Lane = Lane.BULK
