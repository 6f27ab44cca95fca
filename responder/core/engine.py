"""The decision engine: events in, decisions out. Pure, synchronous, deterministic.

Time is the event's own time (never the wall clock), held monotonic across events, so replaying the
same sequence gives the same decisions, ids included.

Memory is bounded: a subject is forgotten once every signal on it is past its window and no response is
in force on it (it would score 0 and be decided as a new one anyway), within a minute: subjects are
listed under the minute their last signal ends, and a minute's list is looked at once it is past, so no
event pays for a scan and a subject costs one list slot more, not a heap entry.

At most `max_subjects` are tracked: near the limit only high and critical events may add a subject, at
the limit none may, and a tracked one is never dropped to make room (a flood of new names must not wash
out the risk of a real suspect, nor a response in force).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from responder.core.actions import Action, ActionType
from responder.core.conditions import render
from responder.core.decisions import Decision, Lift, Outcome, SubjectExplanation
from responder.core.events import Event, Severity
from responder.core.identity import IdentityMap, SubjectView
from responder.core.risk import Contribution, Hit, SubjectRisk
from responder.core.rules import ActionTemplate, ResponseRule, RuleSet, SignalRule
from responder.inventory import PeerSpec


@dataclass(frozen=True, slots=True)
class SubjectState:
    """A read-only view of one subject, for explanations and the admin API."""

    subject: str
    score: float
    signals: frozenset[str]
    active_response: str | None


DEFAULT_MAX_SUBJECTS = 1_000_000
_MINUTE = 60.0


class Engine:
    def __init__(self, rules: RuleSet, identity: IdentityMap, *, max_subjects: int = DEFAULT_MAX_SUBJECTS) -> None:
        if max_subjects < 1:
            raise ValueError("max_subjects must be at least 1")
        self._rules = rules
        self._identity = identity
        self._subjects: dict[str, SubjectRisk] = {}
        # Subject keys by the minute their `live_until` falls in (stale entries are skipped), and those
        # minutes as a heap: the first one to look at, when event time passes its end.
        self._due: dict[int, list[str]] = {}
        self._minutes: list[int] = []
        self._next_sweep = float("inf")
        self._now = float("-inf")
        self.max_subjects = max_subjects
        # The last tenth is kept for high and critical events: low-grade noise cannot fill it.
        self._open_to_all = max_subjects - max_subjects // 10

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @property
    def identity(self) -> IdentityMap:
        return self._identity

    def replace_rules(self, rules: RuleSet) -> None:
        """Swap in a new rule set; risk already accrued is kept."""
        self._rules = rules

    def replace_identity(self, identity: IdentityMap) -> None:
        self._identity = identity

    def reset(self) -> None:
        """Forget all risk, to be rebuilt from the journal (after this instance's subjects changed)."""
        self._subjects = {}
        self._due, self._minutes, self._next_sweep = {}, [], float("inf")
        self._now = float("-inf")

    @property
    def tracked(self) -> int:
        return len(self._subjects)

    @property
    def full(self) -> bool:
        """Near or at `max_subjects`: events below high severity add no new subject."""
        return len(self._subjects) >= self._open_to_all

    def release(self, subject: str, response: str) -> None:
        """The response on `subject` ended (undone, expired, replaced elsewhere): it may be decided again."""
        state = self._subjects.get(subject)
        if state is not None and state.active_response == response:
            state.active_response, state.active_level, state.active_until = None, 0, None
            # Kept while the response was in force; forgotten from now on once its signals are past.
            state.live_until = max(state.live_until, self._now)
            self._due_at(state.live_until, subject)

    def state(self, subject: str, now: float | None = None) -> SubjectState:
        at = self._now if now is None else now
        risk = self._subjects.get(subject)
        if risk is None:
            return SubjectState(subject, 0.0, frozenset(), None)
        score, _ = risk.score(at, self._rules.cap, self._rules.settings.max_score)
        return SubjectState(subject, score, risk.held(at), risk.active_response if risk.active(at) else None)

    def expiries(self, subject: str, after: float, until: float) -> tuple[float, ...]:
        """When a signal window of `subject` ends in (after, until): where its score steps down."""
        risk = self._subjects.get(subject)
        return risk.expiries(after, until) if risk is not None else ()

    def decaying(self, subject: str, now: float) -> bool:
        """Whether `subject`'s score is fading at `now` (a signal with a half-life still counts)."""
        risk = self._subjects.get(subject)
        return risk is not None and risk.decaying(now)

    def process(self, event: Event) -> Outcome:
        rules = self._rules
        now = max(self._now, event.epoch)
        self._now = now
        if now >= self._next_sweep:
            self._forget_expired(now)
        candidates = rules.candidates(event)
        if not candidates:
            return Outcome(event.id, (), ())
        view = _Views(event)
        decisions: list[Decision] = []
        explanations: list[SubjectExplanation] = []
        refused: list[str] = []
        lifts: list[Lift] = []
        for key in self._identity.resolve(event.subjects):
            risk = self._subjects.get(key)
            subject = self._identity.subject(key)
            held = risk.held(now) if risk is not None else frozenset()
            context = view.lazy(subject, held)
            matched = [r for r in candidates if r.matches(event, held, context)]
            if not matched:
                # Nothing new about this subject: its risk only fades, so no response can newly apply.
                continue
            if risk is None:
                if not self._admits(event):
                    refused.append(key)
                    continue
                risk = self._subjects[key] = SubjectRisk([])
            reasons: dict[str, str] = {}
            for rule in matched:
                hit = _hit(rule, event, now, context)
                reasons[rule.id] = hit.reason
                risk.add(hit, now)
                self._keep_until(key, risk, hit.expires)
            lifted = self._lift(event, key, risk, reasons)
            lifts += lifted
            explanation, decision = self._respond(event, view, subject, risk, [r.id for r in matched], lifted=lifted)
            explanations.append(explanation)
            if decision is not None:
                decisions.append(decision)
                if risk.active_until is not None:
                    self._keep_until(key, risk, risk.active_until)
        return Outcome(event.id, tuple(decisions), tuple(explanations), tuple(refused), tuple(lifts))

    def _lift(self, event: Event, key: str, risk: SubjectRisk, reasons: dict[str, str]) -> list[Lift]:
        """The responses the matched signals lift on this subject. A lift is said whether or not this
        engine remembers the response in force: the journal is what holds the decisions (one older than
        the engine's horizon too), and undoing none is harmless."""
        lifted: list[Lift] = []
        for signal, response in self._rules.lifted(list(reasons)):
            # What decided it goes, or the next event would decide it again on the strength of it.
            risk.forget(response.deciding_signals)
            self.release(key, response.id)
            lifted.append(Lift(key, response.id, signal, event.id, reasons[signal]))
        return lifted

    def _admits(self, event: Event) -> bool:
        """Whether a subject not yet tracked may be added for this event."""
        tracked = len(self._subjects)
        if tracked < self._open_to_all:
            return True
        return tracked < self.max_subjects and event.severity >= Severity.HIGH

    def _keep_until(self, key: str, risk: SubjectRisk, until: float) -> None:
        if until > risk.live_until:
            listed = risk.live_until != float("-inf") and until // _MINUTE == risk.live_until // _MINUTE
            risk.live_until = until
            if not listed:  # (in the same minute, the entry there stands for the new time too)
                self._due_at(until, key)

    def _due_at(self, until: float, key: str) -> None:
        minute = int(until // _MINUTE)
        keys = self._due.get(minute)
        if keys is None:
            keys = self._due[minute] = []
            heapq.heappush(self._minutes, minute)
            self._next_sweep = min(self._next_sweep, (minute + 1) * _MINUTE)
        keys.append(key)

    def _forget_expired(self, now: float) -> None:
        """Forget the subjects whose signals have all passed their window and on which nothing is in
        force. Each entry is looked at once, so the cost is spread over the events that listed them."""
        minutes, subjects = self._minutes, self._subjects
        while minutes and (minutes[0] + 1) * _MINUTE <= now:
            for key in self._due.pop(heapq.heappop(minutes)):
                risk = subjects.get(key)
                if risk is None or risk.live_until > now:
                    continue  # forgotten already, or live for longer: listed under a later minute
                if risk.active(now):
                    continue  # a response without an end is in force: kept until `release` lists it again
                del subjects[key]
        self._next_sweep = (minutes[0] + 1) * _MINUTE if minutes else float("inf")

    def _respond(
        self,
        event: Event,
        view: _Views,
        subject: SubjectView,
        risk: SubjectRisk,
        matched: list[str],
        *,
        lifted: list[Lift],
    ) -> tuple[SubjectExplanation, Decision | None]:
        rules, now = self._rules, self._now
        score, contributions = risk.score(now, rules.cap, rules.settings.max_score)
        held = risk.held(now)
        active = risk.active(now)
        context = view.lazy(subject, held, score)
        notes = [f"{x.response}: lifted by {x.signal} ({x.reason})" for x in lifted]
        if event.claimed_time is not None:
            claimed, counted = event.claimed_time.isoformat(), event.time.isoformat()
            notes.append(f"event {event.id} claimed {claimed}, ahead of its receipt: counted at {counted}")
        chosen: ResponseRule | None = None
        for response in rules.responses:
            why_not = response.unmet(score, held, context)
            if why_not is not None:
                notes.append(f"{response.id}: {why_not}")
                continue
            if response.level <= active:
                notes.append(f"{response.id}: {risk.active_response} (level {active}) is already in force")
                break
            chosen = response
            break
        decision = None
        if chosen is not None:
            decision = self._decide(
                event=event, subject=subject, risk=risk, response=chosen, score=score,
                contributions=contributions, context=context, notes=notes, now=now,
            )  # fmt: skip
        explanation = SubjectExplanation(
            subject.key, score, contributions, tuple(matched), decision.id if decision else None, tuple(notes)
        )
        return explanation, decision

    def _decide(
        self,
        *,
        event: Event,
        subject: SubjectView,
        risk: SubjectRisk,
        response: ResponseRule,
        score: float,
        contributions: tuple[Contribution, ...],
        context: Callable[[], dict[str, Any]],
        notes: list[str],
        now: float,
    ) -> Decision | None:
        actions = self._targets(subject, response, notes)
        if not actions:
            return None
        rules = self._rules
        replaces = risk.active_response
        risk.active_response, risk.active_level = response.id, response.level
        risk.active_until = now + response.ttl_s if response.ttl_s else None
        approval = response.approval or (response.approval_when is not None and response.approval_when.holds(context()))
        digest = hashlib.sha256(f"{subject.key}|{response.id}|{event.id}".encode()).hexdigest()[:24]
        return Decision(
            id=f"dec-{digest}",
            subject=subject.key,
            response=response.id,
            level=response.level,
            score=round(score, 3),
            contributions=contributions,
            actions=actions,
            requires_approval=approval,
            ttl_s=response.ttl_s,
            dry_run=response.dry_run or rules.settings.dry_run,
            event_id=event.id,
            at=now,
            replaces=replaces,
            notes=tuple(notes),
            approval_timeout=response.approval_timeout if approval else None,
        )

    def _targets(self, subject: SubjectView, response: ResponseRule, notes: list[str]) -> tuple[Action, ...]:
        """The actions `response` takes on the subject's peers, each once; none (with a note why) if the
        subject is protected or every peer is."""
        protection = self._rules.protection
        if (subject.kind == "user" and subject.name in protection.users) or (
            subject.kind == "device" and subject.name in protection.devices
        ):
            notes.append(f"{response.id}: suppressed, {subject.key} is protected")
            return ()
        actions: list[Action] = []
        for peer in subject.peers:
            if self._peer_protected(peer, response, notes):
                continue
            for template in response.actions:
                if template.type is ActionType.KILL_FLOWS and peer.hub in self._identity.overlays:
                    continue  # an overlay has no conntrack to flush: its cut-off ends the device's sessions
                actions.extend(_expand(template, peer, self._rules.settings.quarantine_set, response.ttl_s))
        if not actions:
            notes.append(f"{response.id}: no enforceable target for {subject.key}")
        return tuple(dict.fromkeys(actions))

    def _peer_protected(self, peer: PeerSpec, response: ResponseRule, notes: list[str]) -> bool:
        protection, identity = self._rules.protection, self._identity
        if str(peer.public_key) in protection.keys or (peer.device or peer.name) in protection.devices:
            notes.append(f"{response.id}: peer {peer.name} is protected")
            return True
        why = protection.address_protected(peer.tunnel_ip, identity.hub_addresses, identity.management)
        if why:
            notes.append(f"{response.id}: peer {peer.name} at {peer.tunnel_ip} is protected ({why})")
            return True
        return False


class _Views:
    """CEL contexts, built only when a condition or a reason needs them (they cost more than the rest)."""

    __slots__ = ("_event", "_event_view")

    def __init__(self, event: Event) -> None:
        self._event = event
        self._event_view: dict[str, Any] | None = None

    def lazy(
        self, subject: SubjectView, held: frozenset[str], score: float | None = None
    ) -> Callable[[], dict[str, Any]]:
        built: list[dict[str, Any]] = []

        def context() -> dict[str, Any]:
            if not built:
                if self._event_view is None:
                    self._event_view = self._event.view()
                ctx: dict[str, Any] = {"event": self._event_view, "subject": subject.view(), "signals": sorted(held)}
                if score is not None:
                    ctx["score"] = score
                built.append(ctx)
            return built[0]

        return context


def _hit(rule: SignalRule, event: Event, now: float, context: Callable[[], dict[str, Any]]) -> Hit:
    at = min(event.epoch, now)
    reason = render(rule.reason, context()) if "{" in rule.reason else rule.reason
    return Hit(rule.id, rule.points, at, at + rule.window_s, rule.half_life_s, reason)


def _expand(template: ActionTemplate, peer: PeerSpec, quarantine_set: str, ttl_s: int | None) -> list[Action]:
    kind, hub = template.type, peer.hub
    if kind is ActionType.QUARANTINE:
        return [Action(kind, hub, address=peer.tunnel_ip, set_name=quarantine_set, ttl_s=ttl_s)]
    if kind in {ActionType.DELETE_ELEMENT, ActionType.ADD_ELEMENT}:
        sets = [s for s in peer.sets if not template.sets or s in template.sets]
        return [Action(kind, hub, address=peer.tunnel_ip, set_name=s) for s in sets]
    if kind is ActionType.KILL_FLOWS:
        return [Action(kind, hub, address=peer.tunnel_ip)]
    return [Action(kind, hub, peer_key=peer.public_key)]
