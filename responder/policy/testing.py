"""Rule tests: YAML cases beside the rules (`rules/tests/*.yaml`), run through the real engine.

A case lists events and the exact decisions they must produce (subject and response, optionally the
approval flag, dry-run flag and the exact actions); anything else decided is a failure too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from responder.core.actions import Action
from responder.core.decisions import Decision, Outcome
from responder.core.engine import Engine
from responder.core.events import Event, Severity, SeverityField, Source, Subjects
from responder.core.identifiers import IPAddress, WireGuardKey
from responder.core.identity import IdentityMap
from responder.core.rules import RuleSet
from responder.inventory import Inventory, InventoryError
from responder.policy.loader import Problem
from responder.policy.schema import Duration
from responder.policy.yamlpos import YamlError, load_with_positions, position


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSpec(_Spec):
    """An event in short form. `at` is absolute; `after` is relative to the previous event."""

    source: Source
    type: str
    product: str = ""
    at: AwareDatetime | None = None
    after: Duration | None = None
    users: list[str] = []
    devices: list[str] = []
    keys: list[WireGuardKey] = []
    addresses: list[IPAddress] = []
    severity: SeverityField = Severity.INFO
    attributes: dict[str, Any] = {}
    id: str | None = None

    def event(self, default_id: str, previous: datetime) -> Event:
        when = self.at or previous + timedelta(seconds=self.after or 0)
        event_id = self.id or default_id
        return Event(
            id=event_id,
            source=self.source,
            product=self.product,
            type=self.type,
            time=when,
            subjects=Subjects(
                users=tuple(self.users),
                devices=tuple(self.devices),
                keys=tuple(self.keys),
                addresses=tuple(self.addresses),
            ),
            severity=self.severity,
            attributes=self.attributes,
            dedup_key=event_id,
        )


def parse_events(specs: Sequence[EventSpec], prefix: str, start: datetime) -> list[Event]:
    events: list[Event] = []
    previous = start
    for i, spec in enumerate(specs):
        event = spec.event(f"{prefix}-{i + 1}", previous)
        previous = event.time
        events.append(event)
    return events


class ExpectedDecision(_Spec):
    subject: str
    response: str
    approval: bool | None = None
    dry_run: bool | None = None
    actions: list[str] | None = None


class ExpectedLift(_Spec):
    subject: str
    response: str


class Expectation(_Spec):
    decisions: list[ExpectedDecision] = []
    lifts: list[ExpectedLift] = Field(default=[], description="Responses the policy takes back (lifted_by)")
    notes: list[str] = Field(default=[], description="Substrings that must appear in the explanation")


class CaseSpec(_Spec):
    name: str = Field(min_length=1)
    start: AwareDatetime = datetime.fromisoformat("2026-03-02T10:00:00+00:00")
    events: list[EventSpec] = Field(min_length=1)
    expect: Expectation


class TestFileSpec(_Spec):
    inventory: Path | None = None
    cases: list[CaseSpec] = Field(min_length=1)


@dataclass
class CaseResult:
    file: str
    line: int
    name: str
    failures: list[str]
    decisions: list[Decision]
    outcomes: list[Outcome]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class TestRun:
    results: list[CaseResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    signals_fired: set[str] = field(default_factory=set)
    responses_decided: set[str] = field(default_factory=set)

    @property
    def passed(self) -> bool:
        return not self.problems and all(r.passed for r in self.results)

    def uncovered(self, rules: RuleSet) -> list[str]:
        missing = [f"signal {s.id}" for s in rules.signals if s.id not in self.signals_fired]
        return missing + [f"response {r.id}" for r in rules.responses if r.id not in self.responses_decided]


def describe(action: Action, names: dict[str, str]) -> str:
    parts = [action.type.value, action.hub]
    if action.set_name:
        parts.append(action.set_name)
    if action.address is not None:
        parts.append(str(action.address))
    if action.peer_key is not None:
        parts.append(names.get(str(action.peer_key), str(action.peer_key)))
    return " ".join(parts)


def _summary(d: Decision, names: dict[str, str]) -> str:
    flags = [f for f, on in (("approval", d.requires_approval), ("dry-run", d.dry_run)) if on]
    acts = ", ".join(describe(a, names) for a in d.actions)
    return f"{d.subject} -> {d.response}{' (' + ', '.join(flags) + ')' if flags else ''}: {acts}"


def _check(case: CaseSpec, decisions: list[Decision], outcomes: list[Outcome], names: dict[str, str]) -> list[str]:
    failures: list[str] = []
    unmatched = list(decisions)
    for exp in case.expect.decisions:
        decision = next((d for d in unmatched if (d.subject, d.response) == (exp.subject, exp.response)), None)
        if decision is None:
            failures.append(f"- expected: {exp.subject} -> {exp.response}")
            continue
        unmatched.remove(decision)
        if exp.approval is not None and decision.requires_approval != exp.approval:
            failures.append(
                f"~ {exp.subject} -> {exp.response}: approval {decision.requires_approval}, expected {exp.approval}"
            )
        if exp.dry_run is not None and decision.dry_run != exp.dry_run:
            failures.append(f"~ {exp.subject} -> {exp.response}: dry_run {decision.dry_run}, expected {exp.dry_run}")
        if exp.actions is not None:
            actual = sorted(describe(a, names) for a in decision.actions)
            wanted = sorted(exp.actions)
            if actual != wanted:
                failures += [
                    f"~ {exp.subject} -> {exp.response}: action missing: {a}" for a in wanted if a not in actual
                ]
                failures += [
                    f"~ {exp.subject} -> {exp.response}: action not expected: {a}" for a in actual if a not in wanted
                ]
    failures += [f"+ unexpected: {_summary(d, names)}" for d in unmatched]
    lifts = [(x.subject, x.response) for o in outcomes for x in o.lifts]
    for want in case.expect.lifts:
        if (want.subject, want.response) in lifts:
            lifts.remove((want.subject, want.response))
        else:
            failures.append(f"- expected a lift: {want.subject} -> {want.response}")
    failures += [f"+ unexpected lift: {subject} -> {response}" for subject, response in lifts]
    notes = [n for o in outcomes for e in o.explanations for n in e.notes]
    for wanted_note in case.expect.notes:
        if not any(wanted_note in n for n in notes):
            failures.append(f"- expected a note containing {wanted_note!r}; notes were: {notes}")
    return failures


def run_tests(files: Sequence[Path], rules: RuleSet, default_inventory: Inventory | None = None) -> TestRun:
    run = TestRun()
    for path in files:
        _run_file(path, rules, default_inventory, run)
    return run


def _run_file(path: Path, rules: RuleSet, default_inventory: Inventory | None, run: TestRun) -> None:
    name = str(path)
    try:
        data, positions = load_with_positions(path.read_text(encoding="utf-8"), name)
        spec = TestFileSpec.model_validate(data)
    except OSError as exc:
        run.problems.append(Problem(name, 1, 1, f"cannot read: {exc.strerror}"))
        return
    except YamlError as exc:
        run.problems.append(Problem(exc.file, exc.line, exc.column, str(exc).split(": ", 1)[1]))
        return
    except ValidationError as exc:
        for err in exc.errors():
            line, col = position(positions, tuple(err["loc"]))
            where = ".".join(str(p) for p in err["loc"])
            run.problems.append(Problem(name, line, col, f"{where}: {err['msg']}"))
        return
    inventory = default_inventory
    if spec.inventory is not None:
        try:
            inventory = Inventory.load(path.parent / spec.inventory)
        except InventoryError as exc:
            run.problems.append(Problem(name, *position(positions, ("inventory",)), str(exc)))
            return
    names = {str(p.public_key): p.name for p in inventory.peers} if inventory else {}
    identity = IdentityMap(inventory)
    for i, case in enumerate(spec.cases):
        engine = Engine(rules, identity)
        events = parse_events(case.events, f"{path.stem}-{i + 1}", case.start)
        outcomes = [engine.process(e) for e in events]
        decisions = [d for o in outcomes for d in o.decisions]
        for o in outcomes:
            for e in o.explanations:
                run.signals_fired.update(e.matched)
        run.responses_decided.update(d.response for d in decisions)
        line = position(positions, ("cases", i))[0]
        failures = _check(case, decisions, outcomes, names)
        run.results.append(CaseResult(name, line, case.name, failures, decisions, outcomes))
