"""`responder act`: every acting command takes the same shared options, after its own, and hands them over."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main

from responder.cli import act

SHARED = ["--dry-run", "--json", "--reason", "--config", "--inventory", "--journal", "--rules", "--force-protected"]
ACTING = ["remove-peer", "delete-element", "quarantine", "kill-flows", "rotate-key"]


@pytest.mark.parametrize("name", ACTING)
def test_every_acting_command_takes_the_shared_options_after_its_own(name: str) -> None:
    group = typer.main.get_group(act.app)
    command = group.commands[name]
    options = [p.opts[0] for p in command.params]
    assert options[-len(SHARED) :] == SHARED
    assert not set(options[: -len(SHARED)]) & set(SHARED)


def test_the_shared_options_reach_the_command_as_one_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[act.Acting] = []
    monkeypatch.setattr(act, "_key_target", lambda *_: ("hub1", None))
    monkeypatch.setattr(act, "_action", lambda **_: None)
    monkeypatch.setattr(act, "_execute", lambda actions, inv, options: seen.append(options))
    monkeypatch.setattr(act.Acting, "inventory", lambda self: None)
    group = typer.main.get_group(act.app)
    args = ["remove-peer", "--peer", "admin1", "--dry-run", "--reason", "drill", "--journal", "sqlite:///x.db",
            "--rules", str(tmp_path), "--force-protected", "exercise"]  # fmt: skip
    group.main(args, standalone_mode=False)
    assert seen == [
        act.Acting(
            dry_run=True,
            as_json=False,
            reason="drill",
            journal="sqlite:///x.db",
            rules=[tmp_path],
            force_protected="exercise",
        )
    ]
