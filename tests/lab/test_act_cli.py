"""`responder act` and `responder hubs status` as an operator runs them: a real process against the lab,
proven with packets, restored by the id it printed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from responder.enrollment import AgentRelease
from responder.lab import Lab

pytestmark = pytest.mark.lab

RESPONDER = str(Path(sys.executable).with_name("responder"))


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        RESPONDER, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _ping(lab: Lab, src: str, host: str) -> bool:
    return (await lab.exec(src, "ping", "-c", "1", "-W", "1", "-q", host, timeout=5)).ok


async def test_remove_peer_then_restore_by_the_printed_id(lab: Lab, tmp_path: Path) -> None:
    where = ["--inventory", str(lab.inventory_path), "--journal", f"sqlite:///{tmp_path}/journal.db"]
    assert await _ping(lab, "admin1", "10.100.0.20")

    code, out, err = await _cli("act", "remove-peer", "--peer", "admin1", "--json", *where)
    assert code == 0, err
    (applied,) = json.loads(out)
    assert (applied["ok"], applied["verified"], applied["action"]["type"]) == (True, True, "remove_peer")
    try:
        assert not await _ping(lab, "admin1", "10.100.0.20")
    finally:
        code, out, err = await _cli("act", "restore", applied["id"], "--json", *where)
    assert code == 0, err
    assert json.loads(out)["verified"] is True
    await asyncio.sleep(0.5)  # the restored peer's next packet carries a fresh handshake
    assert await _ping(lab, "admin1", "10.100.0.20")

    code, _, err = await _cli("act", "restore", applied["id"], *where)
    assert code == 2 and "already restored" in err


async def test_hubs_status_shows_peers_and_sets(lab: Lab) -> None:
    code, out, err = await _cli("hubs", "status", "--json", "--inventory", str(lab.inventory_path))
    assert code == 0, err
    (hub,) = json.loads(out)
    assert hub["reachable"] is True
    assert hub["sets"]["admin_devices"] == 1
    keys = {p["key"] for p in hub["peers"]}
    assert keys == {str(p.public_key) for p in lab.inventory.peers_on("hub1")}
    release = AgentRelease.shipped()  # the agent's release and the sha256 of the file it runs from
    assert hub["agent"] == {"release": release.version, "sha256": release.sha256, "protocol": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["act", "quarantine", "--hub", "hub1", "--element", "10.0.0.1;reboot"], "does not appear to be an IP"),
        (["act", "remove-peer", "--hub", "hub1", "--key", "$(reboot)"], "44 base64 characters"),
        (["act", "remove-peer", "--peer", "nobody"], "no peer named 'nobody'"),
        (["act", "rotate-key", "--peer", "admin1"], "repeat with --yes"),
        (["act", "delete-element", "--peer", "admin1", "--set", "x;y"], "invalid set name"),
    ],
)
async def test_bad_input_is_refused_before_any_hub_is_touched(lab: Lab, args: list[str], message: str) -> None:
    code, _, err = await _cli(*args, "--inventory", str(lab.inventory_path), "--journal", "sqlite:////nonexistent/x")
    assert code == 2
    assert message in err
