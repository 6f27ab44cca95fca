"""The rule files: the default policy checks and passes its tests; broken files say file:line:col."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from responder.cli import app
from responder.core.engine import Engine
from responder.core.identity import IdentityMap
from responder.policy import PolicyError, load_rules
from responder.policy.reload import reload_rules

RULES = Path(__file__).resolve().parents[2] / "rules"
runner = CliRunner()


def test_default_policy_checks() -> None:
    result = runner.invoke(app, ["rules", "check", str(RULES)])
    assert result.exit_code == 0, result.output
    rules = load_rules([RULES])
    assert f"{len(rules.signals)} signals, {len(rules.responses)} responses" in result.output


def test_default_policy_passes_its_tests_and_every_rule_is_exercised() -> None:
    result = runner.invoke(app, ["rules", "test", str(RULES)])
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output
    assert "not exercised" not in result.output


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "rules.yaml").write_text(text)
    return tmp_path


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PolicyError) as err:
        load_rules([_write(tmp_path, text)])
    return [str(p) for p in err.value.problems]


def test_schema_error_names_file_line_and_field(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path, "signals:\n  - id: a\n    points: 10\n    window: 1h\n    reason: r\n    colour: red\n"
    )
    assert problems == [f"{tmp_path}/rules.yaml:6:5: signals.0.colour: Extra inputs are not permitted"]


def test_invalid_cel_points_at_the_condition(tmp_path: Path) -> None:
    text = "signals:\n  - id: a\n    points: 10\n    window: 1h\n    reason: r\n    when: 'event.type =='\n"
    (problem,) = _problems(tmp_path, text)
    assert problem.startswith(f"{tmp_path}/rules.yaml:6:5: invalid CEL condition")


def test_unknown_signal_and_duplicate_id_are_reported_together(tmp_path: Path) -> None:
    text = (
        "signals:\n  - {id: a, points: 10, window: 1h, reason: r}\n  - {id: a, points: 5, window: 1h, reason: r}\n"
        "responses:\n  - {id: q, level: 1, any_signals: [nope], actions: [quarantine]}\n"
    )
    problems = _problems(tmp_path, text)
    assert any(":3:" in p and "rule id 'a' already used at" in p for p in problems)
    assert any(":5:" in p and "unknown signal 'nope'" in p for p in problems)


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, "signals:\n  - id: a\n   points: [\n")
    assert problem.startswith(f"{tmp_path}/rules.yaml:3:")
    assert "invalid YAML" in problem


def test_check_command_exits_1_with_the_location(tmp_path: Path) -> None:
    _write(tmp_path, "responses:\n  - {id: q, level: 1, actions: [explode]}\n")
    result = runner.invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path}/rules.yaml:2:" in result.output


def test_failing_rule_test_shows_a_diff(tmp_path: Path) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    case = tmp_path / "rules" / "tests" / "test_okta.yaml"
    case.write_text(case.read_text().replace("response: cut-off\n          approval: false", "response: quarantine", 1))
    result = runner.invoke(app, ["rules", "test", str(tmp_path / "rules")])
    assert result.exit_code == 1
    assert "- expected: user:alice@example.com -> quarantine" in result.output
    assert "+ unexpected: user:alice@example.com -> cut-off" in result.output


def test_a_lift_missing_or_not_expected_fails_the_rule_test(tmp_path: Path) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    responses = tmp_path / "rules" / "responses.yaml"
    responses.write_text(responses.read_text().replace("lifted_by: [okta-user-reactivated, ", "lifted_by: ["))
    case = tmp_path / "rules" / "tests" / "test_lifecycle.yaml"
    enabled = "{source: entra, type: user.enabled, users: [bob@example.com]}"
    extra = f"  - name: a lift not expected\n    events: [{enabled}]\n    expect: {{decisions: []}}\n"
    case.write_text(case.read_text() + extra)
    result = runner.invoke(app, ["rules", "test", str(tmp_path / "rules")])
    assert result.exit_code == 1
    assert "- expected a lift: user:alice@example.com -> offboard" in result.output
    assert "+ unexpected lift: user:bob@example.com -> offboard" in result.output


def test_hot_reload_swaps_a_valid_set_and_keeps_the_old_one_on_error(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES, rules_dir)
    engine = Engine(load_rules([rules_dir]), IdentityMap(None))
    (rules_dir / "extra.yaml").write_text("signals:\n  - {id: extra, source: okta, points: 1, window: 1h, reason: r}\n")
    assert reload_rules(engine, [rules_dir]).applied
    assert "extra" in engine.rules.signal_ids()
    (rules_dir / "extra.yaml").write_text("signals:\n  - {id: extra, points: oops}\n")
    result = reload_rules(engine, [rules_dir])
    assert not result.applied
    assert any("extra.yaml:2" in e for e in result.errors)
    assert "extra" in engine.rules.signal_ids()
