"""A broken configuration, inventory or rule file: `responder run` says where and what in one line per
problem and exits 2 — no traceback, nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    # name: (files to write, run arguments, what the one line says)
    "config YAML syntax": (
        {"responder.yaml": "listen:\n  port: [9000\ndry_run: true\n"},
        ["--config", "{tmp}/responder.yaml"],
        "{tmp}/responder.yaml:3:8: invalid YAML: expected ',' or ']'",
    ),
    "config not a mapping": (
        {"responder.yaml": "- listen\n"},
        ["--config", "{tmp}/responder.yaml"],
        "{tmp}/responder.yaml:1:1: expected a mapping of settings, got a list",
    ),
    "config wrong value": (
        {"responder.yaml": "dry_run: true\nlisten:\n  port: 99999\n"},
        ["--config", "{tmp}/responder.yaml"],
        "{tmp}/responder.yaml:3:3: listen.port: Input should be less than or equal to 65535",
    ),
    "missing inventory": ({}, ["--inventory", "{tmp}/nope.yaml"], "{tmp}/nope.yaml: cannot read inventory"),
    "inventory YAML syntax": (
        {"inventory.yaml": "hubs:\n  - name: hub1\n    ssh: [10.0.0.1\n"},
        ["--inventory", "{tmp}/inventory.yaml"],
        "{tmp}/inventory.yaml:4:1: not valid YAML",
    ),
    "inventory wrong field": (
        {"inventory.yaml": "hubs: []\npeers: []\nhubz: []\n"},
        ["--inventory", "{tmp}/inventory.yaml"],
        "{tmp}/inventory.yaml:3:1: invalid inventory: hubz: Extra inputs are not permitted",
    ),
    "missing rules": (
        {"responder.yaml": "rules: ['{tmp}/no-rules']\n"},
        ["--config", "{tmp}/responder.yaml"],
        "{tmp}/no-rules:1:1: cannot read",
    ),
    "rules YAML syntax": (
        {"rules/bad.yaml": "signals:\n  - id: x\n    points: [1\n", "responder.yaml": "rules: ['{tmp}/rules']\n"},
        ["--config", "{tmp}/responder.yaml"],
        "{tmp}/rules/bad.yaml:4:1: invalid YAML",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_run_says_what_is_wrong_where_in_one_line_and_exits_2(tmp_path: Path, case: str) -> None:
    files, arguments, expected = CASES[case]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text.format(tmp=tmp_path))
    (tmp_path / "no-hubs.yaml").write_text("hubs: []\n")
    if "--inventory" not in arguments:
        arguments = [*arguments, "--inventory", "{tmp}/no-hubs.yaml"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    done = subprocess.run(
        [sys.executable, "-m", "responder", "run", "--listen", "127.0.0.1:0",
         "--journal", f"sqlite:///{tmp_path}/journal.db", *[a.format(tmp=tmp_path) for a in arguments]],
        env=clean, cwd=ROOT, capture_output=True, text=True, timeout=15, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert expected.format(tmp=tmp_path) in lines[0]
    assert "Traceback" not in done.stderr
