"""Read rule files into a compiled RuleSet, reporting every problem as `file:line:col: message`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from responder.core.approvals import ApprovalTimeout, OnTimeout
from responder.core.conditions import Condition, ConditionError
from responder.core.rules import (
    ActionTemplate,
    PolicySettings,
    Protection,
    ResponseRule,
    RuleSet,
    SignalRule,
    network,
)
from responder.policy.schema import ResponseSpec, RuleFileSpec, SignalSpec
from responder.policy.yamlpos import Path_, YamlError, load_with_positions, position

TESTS_DIR = "tests"


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyError(Exception):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


def rule_files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(rule files, test files) under the given files or directories; tests are `<dir>/tests/test_*.yaml`."""
    rules: list[Path] = []
    tests: list[Path] = []
    for path in paths:
        if path.is_dir():
            rules += sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
            test_dir = path / TESTS_DIR
            if test_dir.is_dir():
                tests += sorted(p for p in test_dir.glob("test_*.y*ml") if p.is_file())
        elif path.name.startswith("test_"):
            tests.append(path)
        else:
            rules.append(path)
    return rules, tests


@dataclass
class _Loaded:
    file: str
    spec: RuleFileSpec
    positions: dict[Path_, tuple[int, int]]

    def at(self, *path: str | int) -> tuple[str, int, int]:
        line, col = position(self.positions, path)
        return self.file, line, col


def _validation_problems(file: str, positions: dict[Path_, tuple[int, int]], exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith("function-"))
        line, col = position(positions, loc)
        where = ".".join(str(p) for p in loc) or "(top level)"
        out.append(Problem(file, line, col, f"{where}: {err['msg']}"))
    return out


def _read(path: Path) -> tuple[_Loaded | None, list[Problem]]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(name, 1, 1, f"cannot read: {exc.strerror}")]
    try:
        data, positions = load_with_positions(text, name)
    except YamlError as exc:
        return None, [Problem(exc.file, exc.line, exc.column, str(exc).split(": ", 1)[1])]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [Problem(name, 1, 1, "a rule file is a mapping with signals:, responses:, protected:, settings:")]
    try:
        return _Loaded(name, RuleFileSpec.model_validate(data), positions), []
    except ValidationError as exc:
        return None, _validation_problems(name, positions, exc)


def _condition(source: str | None, where: tuple[str, int, int], problems: list[Problem]) -> Condition | None:
    if source is None:
        return None
    try:
        return Condition(source)
    except ConditionError as exc:
        problems.append(Problem(*where, f"invalid CEL condition: {exc}"))
        return None


def _signal(spec: SignalSpec, loaded: _Loaded, i: int, problems: list[Problem]) -> SignalRule:
    return SignalRule(
        id=spec.id,
        points=spec.points,
        window_s=spec.window,
        cap=spec.cap if spec.cap is not None else spec.points,
        reason=spec.reason,
        source=spec.source,
        types=frozenset(spec.type),
        products=frozenset(spec.product),
        min_severity=spec.min_severity,
        when=_condition(spec.when, loaded.at("signals", i, "when"), problems),
        half_life_s=spec.half_life,
        requires=frozenset(spec.requires),
        description=spec.description,
        where="{}:{}".format(*loaded.at("signals", i)[:2]),
    )


def _response(spec: ResponseSpec, loaded: _Loaded, i: int, problems: list[Problem]) -> ResponseRule:
    approval_when = None
    if isinstance(spec.approval, str):
        approval_when = _condition(spec.approval, loaded.at("responses", i, "approval"), problems)
    return ResponseRule(
        id=spec.id,
        level=spec.level,
        actions=tuple(ActionTemplate(a.type, a.sets) for a in spec.actions),
        min_score=spec.min_score,
        any_signals=frozenset(spec.any_signals),
        all_signals=frozenset(spec.all_signals),
        when=_condition(spec.when, loaded.at("responses", i, "when"), problems),
        ttl_s=int(spec.ttl) if spec.ttl else None,
        approval=spec.approval is True,
        approval_when=approval_when,
        approval_timeout=_approval_timeout(spec),
        dry_run=spec.dry_run,
        lifted_by=frozenset(spec.lifted_by),
        description=spec.description,
        where="{}:{}".format(*loaded.at("responses", i)[:2]),
    )


def _approval_timeout(spec: ResponseSpec) -> ApprovalTimeout | None:
    if spec.approval_timeout is None:
        return None
    return ApprovalTimeout(
        after_s=int(spec.approval_timeout), then=OnTimeout(spec.on_timeout), escalate_to=spec.escalate_to
    )


def load_rules(paths: Sequence[Path]) -> RuleSet:
    """Compile every rule file under `paths` into one RuleSet, or raise PolicyError listing every problem."""
    files, _ = rule_files(paths)
    if not files:
        raise PolicyError([Problem(", ".join(map(str, paths)) or "(none)", 1, 1, "no rule files (*.yaml) found")])
    problems: list[Problem] = []
    loaded: list[_Loaded] = []
    for path in files:
        result, found = _read(path)
        problems += found
        if result is not None:
            loaded.append(result)
    signals = [_signal(s, f, i, problems) for f in loaded for i, s in enumerate(f.spec.signals)]
    responses = [_response(r, f, i, problems) for f in loaded for i, r in enumerate(f.spec.responses)]
    _check_ids(loaded, problems)
    _check_signal_references(loaded, {s.id for s in signals}, problems)
    protection = _protection(loaded, problems)
    settings = _settings(loaded, problems)
    if problems:
        raise PolicyError(problems)
    return RuleSet(tuple(signals), tuple(responses), protection, settings)


def _check_ids(loaded: list[_Loaded], problems: list[Problem]) -> None:
    seen: dict[str, tuple[str, int, int]] = {}
    for f in loaded:
        ids = [("signals", i, s.id) for i, s in enumerate(f.spec.signals)]
        ids += [("responses", i, r.id) for i, r in enumerate(f.spec.responses)]
        for kind, i, rule_id in ids:
            where = f.at(kind, i, "id")
            if rule_id in seen:
                first = seen[rule_id]
                problems.append(Problem(*where, f"rule id {rule_id!r} already used at {first[0]}:{first[1]}"))
            seen.setdefault(rule_id, where)


def _check_signal_references(loaded: list[_Loaded], signal_ids: set[str], problems: list[Problem]) -> None:
    for f in loaded:
        refs: list[tuple[str, int, str, list[str]]] = [
            ("responses", i, fld, getattr(r, fld))
            for i, r in enumerate(f.spec.responses)
            for fld in ("any_signals", "all_signals", "lifted_by")
        ]
        refs += [("signals", i, "requires", s.requires) for i, s in enumerate(f.spec.signals)]
        for kind, i, fld, names in refs:
            for j, name in enumerate(names):
                if name not in signal_ids:
                    problems.append(Problem(*f.at(kind, i, fld, j), f"unknown signal {name!r}"))


def _settings(loaded: list[_Loaded], problems: list[Problem]) -> PolicySettings:
    found = [f for f in loaded if f.spec.settings is not None]
    for f in found[1:]:
        problems.append(Problem(*f.at("settings"), f"settings: already given in {found[0].file}"))
    if not found or found[0].spec.settings is None:
        return PolicySettings()
    spec = found[0].spec.settings
    return PolicySettings(spec.max_score, spec.quarantine_set, spec.dry_run)


def _protection(loaded: list[_Loaded], problems: list[Problem]) -> Protection:
    specs = [(f, f.spec.protected) for f in loaded if f.spec.protected is not None]
    networks = []
    for f, p in specs:
        for j, address in enumerate(p.addresses):
            try:
                networks.append(network(address))
            except ValueError:
                problems.append(Problem(*f.at("protected", "addresses", j), f"not an address or network: {address!r}"))
    return Protection(
        users=frozenset(u.lower() for _, p in specs for u in p.users),
        devices=frozenset(d for _, p in specs for d in p.devices),
        keys=frozenset(k for _, p in specs for k in p.keys),
        networks=tuple(networks),
        hubs=all(p.hubs for _, p in specs),
        management=all(p.management for _, p in specs),
    )
