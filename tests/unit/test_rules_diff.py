"""`responder rules diff`: two policies on the same recorded events, the decisions that differ printed."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from responder.cli import app
from responder.policy.testing import EventSpec, parse_events

RULES = Path(__file__).resolve().parents[2] / "rules"
INVENTORY = RULES / "tests" / "inventory.yaml"
REPORTED = "    type: user.account.report_suspicious_activity_by_enduser\n    points: 80\n"
runner = CliRunner()


def _events(directory: Path) -> Path:
    """Alice reports suspicious activity (short form); Bob's ThreatInsight detection (a canonical event, as
    the journal stores it)."""
    directory.mkdir()
    (directory / "alice.yaml").write_text(
        "- {source: okta, type: user.account.report_suspicious_activity_by_enduser, users: [alice@example.com]}\n"
    )
    spec = EventSpec.model_validate(
        {"source": "okta", "type": "security.threat.detected", "users": ["bob@example.com"],
         "attributes": {"outcome": {"reason": "DENY"}}}
    )  # fmt: skip
    (bob,) = parse_events([spec], "bob", datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    (directory / "bob.json").write_text(bob.model_dump_json())
    return directory


def test_diff_prints_the_decisions_a_lowered_signal_changes(tmp_path: Path) -> None:
    new = tmp_path / "new"
    shutil.copytree(RULES, new)
    identity = new / "identity.yaml"
    assert REPORTED in identity.read_text()
    identity.write_text(identity.read_text().replace(REPORTED, REPORTED.replace("80", "50")))
    events = _events(tmp_path / "events")
    args = ["rules", "diff", str(RULES), str(new), "--events", str(events), "--inventory", str(INVENTORY)]

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # Alice falls from cut-off (70) to quarantine (40); Bob's quarantine is the same under both.
    assert result.output.splitlines() == [
        "event alice-1: user:alice@example.com: cut-off -> quarantine",
        "1 decisions differ on 2 events",
    ]
    assert runner.invoke(app, [*args, "--exit-code"]).exit_code == 1


def test_diff_of_the_same_rules_changes_nothing_and_a_broken_file_says_where(tmp_path: Path) -> None:
    events = _events(tmp_path / "events")
    result = runner.invoke(app, ["rules", "diff", str(RULES), str(RULES), "--events", str(events), "--exit-code"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["0 decisions differ on 2 events"]

    broken = tmp_path / "broken"
    shutil.copytree(RULES, broken)
    (broken / "identity.yaml").write_text("signals:\n  - {id: broken, points: oops}\n")
    result = runner.invoke(app, ["rules", "diff", str(RULES), str(broken), "--events", str(events)])
    assert result.exit_code == 1
    assert f"{broken / 'identity.yaml'}:2" in result.output
