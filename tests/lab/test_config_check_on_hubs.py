"""`responder config check` against the lab's real hub: reachable with the lab's inventory (pinned host key,
client key, from the management namespace); one line when the pinned key is another."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import asyncssh
import pytest
import yaml

from responder.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
RESPONDER = str(Path(sys.executable).with_name("responder"))


def _config(tmp: Path, inventory: Path) -> Path:
    (tmp / "state").mkdir(mode=0o700)
    shutil.copytree(ROOT / "rules", tmp / "rules")
    config = tmp / "responder.yaml"
    settings = {"inventory": str(inventory), "rules": [str(tmp / "rules")], "journal": f"sqlite:///{tmp}/state/j.db"}
    config.write_text(yaml.safe_dump(settings))
    return config


async def _check(config: Path) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        RESPONDER, "config", "check", "--config", str(config), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


async def test_config_check_reaches_the_lab_hub_with_its_inventory(lab: Lab, tmp_path: Path) -> None:
    code, lines = await _check(_config(tmp_path, lab.inventory_path))
    assert code == 0, lines
    (summary,) = lines
    assert summary.startswith("ok: configuration, secrets, ") and summary.endswith("journal, 1 hub reachable")
    assert "inventory (1 hub, " in summary, summary


async def test_config_check_says_when_the_lab_hub_is_not_the_pinned_one(lab: Lab, tmp_path: Path) -> None:
    data = yaml.safe_load(lab.inventory_path.read_text())
    data["hubs"][0]["ssh"]["host_key"] = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    code, lines = await _check(_config(tmp_path, inventory))
    assert code == 1
    (problem, summary) = lines
    assert problem.startswith(f"{inventory}:") and ": hub hub1: host key does not match the pinned key" in problem
    assert summary.startswith("1 problem found")
