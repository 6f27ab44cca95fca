"""`responder act` as an operator (or a stolen operator shell) runs it: protected targets — the management
address, a hub's own tunnel address, the break-glass admin's peer — are refused exactly as the service's
veto refuses them, also in a dry run, unless `--force-protected REASON`, whose reason lands in the journal's
audit trail. The real CLI in a real process; the inventory is a file, so no lab is needed."""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"  # the shipped policy (the default from ROOT): breakglass@example.com is protected


def _key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


BREAK_GLASS_KEY = _key(3)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    (tmp_path / "id_ed25519").write_text("not used: nothing listens on the hub's port\n")
    hub = {
        "name": "hub1",
        "ssh": {
            "host": "127.0.0.1", "port": _closed_port(), "user": "root",
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ4a2V5Zm9ydGVzdHNvbmx5bm90YXJlYWxrZXkxMjM0",
            "client_key": str(tmp_path / "id_ed25519"),
        },
        "tunnel_network": "10.100.0.0/24",
        "address": "10.100.0.1",
    }  # fmt: skip
    peers = [
        {"name": "admin1", "hub": "hub1", "public_key": _key(1), "tunnel_ip": "10.100.0.10",
         "sets": ["admin_devices"], "owner": "alice@example.com"},
        {"name": "bg1", "hub": "hub1", "public_key": BREAK_GLASS_KEY, "tunnel_ip": "10.100.0.30",
         "sets": ["admin_devices"], "owner": "breakglass@example.com"},
    ]  # fmt: skip
    path.write_text(yaml.safe_dump({"hubs": [hub], "peers": peers, "management_addresses": ["198.18.0.2"]}))
    return path


def _act(*args: str, inventory: Path, journal: str = "sqlite:////nonexistent/journal.db") -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RESPONDER_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "responder", "act", *args, "--inventory", str(inventory), "--journal", journal],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["quarantine", "--hub", "hub1", "--element", "198.18.0.2"], "the responder's management address"),
        (["quarantine", "--hub", "hub1", "--element", "10.100.0.1"], "a hub address"),
        (["kill-flows", "--hub", "hub1", "--element", "10.100.0.1"], "a hub address"),
        (["remove-peer", "--peer", "bg1"], f"key {BREAK_GLASS_KEY} is protected"),
        (["remove-peer", "--hub", "hub1", "--key", BREAK_GLASS_KEY], "is protected"),
        (["rotate-key", "--peer", "bg1"], "is protected"),
        (["delete-element", "--peer", "bg1", "--set", "admin_devices"], "belongs to a protected user or device"),
        (["quarantine", "--hub", "hub1", "--element", "10.100.0.30"], "belongs to a protected user or device"),
    ],
)
def test_act_refuses_protected_targets_also_in_a_dry_run(inventory: Path, args: list[str], why: str) -> None:
    code, out, err = _act(*args, "--dry-run", inventory=inventory)
    assert code == 2, (out, err)
    assert "refused, protected target" in err and why in err and "--force-protected" in err
    assert "would run" not in out


def test_act_plans_unprotected_targets_as_before(inventory: Path) -> None:
    code, out, err = _act("quarantine", "--peer", "admin1", "--dry-run", inventory=inventory)
    assert code == 0, err
    assert "would run on hub1" in out and "10.100.0.10" in out


def test_force_protected_dry_run_plans_and_says_so(inventory: Path) -> None:
    code, out, err = _act(
        "quarantine", "--hub", "hub1", "--element", "10.100.0.1", "--dry-run", "--force-protected", "hub compromised",
        "--rules", str(RULES), inventory=inventory,
    )  # fmt: skip
    assert code == 0, err
    assert "would run on hub1" in out and "10.100.0.1" in out
    assert "acting on a protected target (hub compromised)" in err


def test_force_protected_reason_goes_into_the_audit_trail(inventory: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    code, out, err = _act(
        "remove-peer", "--peer", "bg1", "--reason", "INC-7", "--force-protected", "break-glass key leaked",
        inventory=inventory, journal=f"sqlite:///{journal}",
    )  # fmt: skip
    assert code == 1, (out, err)  # nothing listens where the hub would be: journaled, then not verified
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT actor, kind, detail FROM audit WHERE kind = 'manual_decision'").fetchall()
    (_, _, detail), *_ = rows
    recorded = json.loads(detail)
    assert recorded["reason"] == "INC-7"
    assert recorded["force_protected"]["reason"] == "break-glass key leaked"
    assert BREAK_GLASS_KEY in recorded["force_protected"]["protected"][0]


def test_a_refused_action_touches_no_journal(inventory: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    code, _, err = _act("remove-peer", "--peer", "bg1", inventory=inventory, journal=f"sqlite:///{journal}")
    assert code == 2 and "refused, protected target" in err
    assert not journal.exists()
