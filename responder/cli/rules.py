"""`responder rules`: check, test and explain the YAML risk rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from responder.core.decisions import Outcome
from responder.core.engine import Engine
from responder.core.events import Event
from responder.core.identity import IdentityMap
from responder.inventory import Inventory, InventoryError
from responder.policy import PolicyError, load_rules, rule_files
from responder.policy.diff import decision_changes
from responder.policy.testing import EventSpec, describe, parse_events, run_tests

app = typer.Typer(help="Check, test and explain the YAML risk rules.", no_args_is_help=True)

Paths = Annotated[list[Path], typer.Argument(help="Rule files or directories (tests in DIR/tests/test_*.yaml).")]


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@app.command()
def check(paths: Paths) -> None:
    """Validate rule files and rule test files; every problem is printed as file:line:col."""
    try:
        rules = load_rules(paths)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    _, tests = rule_files(paths)
    run = run_tests(tests, rules)
    if run.problems:
        raise _fail("\n".join(map(str, run.problems)))
    typer.echo(f"ok: {len(rules.signals)} signals, {len(rules.responses)} responses, {len(tests)} test files")


@app.command("test")
def test_(
    paths: Paths,
    require_coverage: Annotated[
        bool, typer.Option("--require-coverage/--no-require-coverage", help="Fail if a rule is never exercised.")
    ] = True,
) -> None:
    """Run the rule test cases: events in, expected decisions (and nothing else) out."""
    try:
        rules = load_rules(paths)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    _, tests = rule_files(paths)
    if not tests:
        raise _fail("no test files (DIR/tests/test_*.yaml) found")
    run = run_tests(tests, rules)
    for problem in run.problems:
        typer.secho(str(problem), fg=typer.colors.RED, err=True)
    for result in run.results:
        mark = typer.style("PASS", fg=typer.colors.GREEN) if result.passed else typer.style("FAIL", fg=typer.colors.RED)
        typer.echo(f"{mark} {result.file}:{result.line} {result.name}")
        for failure in result.failures:
            typer.echo(f"       {failure}")
    uncovered = run.uncovered(rules)
    if uncovered:
        typer.secho(f"not exercised by any case: {', '.join(uncovered)}", fg=typer.colors.YELLOW, err=True)
    passed = sum(r.passed for r in run.results)
    typer.echo(f"{passed} passed, {len(run.results) - passed} failed")
    if not run.passed or (require_coverage and uncovered):
        raise typer.Exit(1)


def _events(path: Path) -> list[Event]:
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    items = data if isinstance(data, list) else [data]
    out: list[Event] = []
    short: list[EventSpec] = []
    for item in items:
        if isinstance(item, dict) and "dedup_key" in item:
            out.append(Event.model_validate(item))
        else:
            short.append(EventSpec.model_validate(item))
    if short:
        from datetime import UTC, datetime  # noqa: PLC0415

        out += parse_events(short, path.stem, datetime(2026, 1, 1, tzinfo=UTC))
    return out


def _render(outcome: Outcome, names: dict[str, str]) -> list[str]:
    lines = [f"event {outcome.event_id}:"]
    if not outcome.explanations:
        lines.append("  names no subject that any signal matched: nothing to score")
    for e in outcome.explanations:
        lines.append(f"  subject {e.subject}: score {e.score:g}")
        lines.append(f"    signals matched by this event: {', '.join(e.matched) or 'none'}")
        for c in e.contributions:
            lines.append(f"    + {c.points:g} {c.rule_id}: {c.reason}")
        lines += [f"    - {note}" for note in e.notes]
    lines += [f"  LIFT {x.subject} -> {x.response}: undone by {x.actor}" for x in outcome.lifts]
    for d in outcome.decisions:
        flags = " (needs approval)" if d.requires_approval else ""
        flags += " (dry run)" if d.dry_run else ""
        lines.append(f"  DECISION {d.id}: {d.subject} -> {d.response}{flags}, ttl {d.ttl_s or 'none'}")
        lines += [f"    action: {describe(a, names)}" for a in d.actions]
    return lines


@app.command()
def explain(
    event: Annotated[Path, typer.Option("--event", help="YAML/JSON: an event, or a list (short or canonical form).")],
    state: Annotated[Path | None, typer.Option("--state", help="Earlier events, processed first.")] = None,
    rules_paths: Annotated[list[Path] | None, typer.Option("--rules", help="Rule files or directories.")] = None,
    inventory: Annotated[Path | None, typer.Option("--inventory", help="Inventory for identity resolution.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Show which signals an event matches, each subject's score, and the decision - or why there is none."""
    try:
        rules = load_rules(rules_paths or [Path("rules")])
        inv = Inventory.load(inventory) if inventory else None
        history = _events(state) if state else []
        events = _events(event)
    except (PolicyError, InventoryError, ValidationError, OSError, yaml.YAMLError) as exc:
        raise _fail(str(exc)) from None
    engine = Engine(rules, IdentityMap(inv))
    for past in history:
        engine.process(past)
    outcomes = [engine.process(e) for e in events]
    names = {str(p.public_key): p.name for p in inv.peers} if inv else {}
    if as_json:
        payload = [
            {
                "event": o.event_id,
                "decisions": [d.to_dict() for d in o.decisions],
                "lifts": [{"subject": x.subject, "response": x.response, "signal": x.signal} for x in o.lifts],
                "subjects": [
                    {"subject": e.subject, "score": e.score, "matched": list(e.matched), "notes": list(e.notes)}
                    for e in o.explanations
                ],
            }
            for o in outcomes
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    for outcome in outcomes:
        typer.echo("\n".join(_render(outcome, names)))


EVENT_FILES = (".json", ".yaml", ".yml")


def _events_in(path: Path) -> list[Event]:
    """Every event of a file, or of the event files under a directory, in time order (stable)."""
    files = sorted(p for p in path.rglob("*") if p.suffix in EVENT_FILES) if path.is_dir() else [path]
    events = [e for f in files for e in _events(f)]
    return sorted(events, key=lambda e: e.time)


@app.command()
def diff(
    old: Annotated[Path, typer.Argument(help="The rules in force: a rule file or directory.")],
    new: Annotated[Path, typer.Argument(help="The changed rules: a rule file or directory.")],
    events: Annotated[
        Path,
        typer.Option(
            "--events",
            help="Event files (JSON/YAML: canonical events, as the journal stores them, or the rule tests' "
            "short form), or a directory of them.",
        ),
    ],
    inventory: Annotated[Path | None, typer.Option("--inventory", help="Inventory for identity resolution.")] = None,
    exit_code: Annotated[bool, typer.Option("--exit-code", help="Exit 1 when a decision differs.")] = False,
) -> None:
    """Show which decisions the change from OLD to NEW would alter on the same events (the review step)."""
    try:
        old_rules, new_rules = load_rules([old]), load_rules([new])
        inv = Inventory.load(inventory) if inventory else None
        recorded = _events_in(events)
    except (PolicyError, InventoryError, ValidationError, OSError, yaml.YAMLError) as exc:
        raise _fail(str(exc)) from None
    changes = decision_changes(old_rules, new_rules, IdentityMap(inv), recorded)
    for c in changes:
        typer.echo(f"event {c.event_id}: {c.subject}: {c.old or 'no decision'} -> {c.new or 'no decision'}")
    typer.echo(f"{len(changes)} decisions differ on {len(recorded)} events")
    if changes and exit_code:
        raise typer.Exit(1)
