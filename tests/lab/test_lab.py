"""The lab proves the seed's policy with real packets, and leaves the machine as it found it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from responder.lab import Check, Lab
from responder.lab.lab import NETNS_DIR, STATE_ROOT
from tests.conftest import LabSession, root_network_snapshot

pytestmark = pytest.mark.lab


def _check(lab: Lab, src: str, dst: str, port: int | None) -> Check:
    for check in lab.topology.matrix():
        if (check.src, check.dst, check.port) == (src, dst, port):
            return check
    raise AssertionError(f"no check {src}->{dst}:{port}")


async def test_reachability_matrix_equals_seed_policy(lab: Lab) -> None:
    status = await lab.status()
    failed = [f"{p.check.label}: expected {p.check.expect}, got {p.outcome}" for p in status.matrix if not p.passed]
    assert failed == []
    assert status.healthy
    outcomes = {(p.check.src, p.check.dst, p.check.proto, p.check.port): p.outcome for p in status.matrix}
    assert outcomes[("admin1", "app1", "tcp", 9090)] == "open"
    assert outcomes[("admin1", "app1", "icmp", None)] == "reply"
    assert outcomes[("app1", "admin1", "tcp", 9090)] == "dropped"
    assert outcomes[("app1", "admin1", "icmp", None)] == "no reply"
    assert all(h.age_s is not None and h.age_s < 180 for h in status.handshakes)


async def test_admin_tunnel_carries_data_to_app(lab: Lab) -> None:
    with lab.namespace("admin1") as admin:
        async with asyncio.timeout(3):
            sock = await admin.connect("10.100.0.20", 9090)
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"hello app1\n")
            assert await reader.readline() == b"hello app1\n"
            writer.close()


async def test_deleting_admin_from_admin_devices_cuts_admin_to_app(lab: Lab) -> None:
    admin_to_app = _check(lab, "admin1", "app1", 9090)
    assert (await lab.probe(admin_to_app)).outcome == "open"
    element = ["inet", "zerotrust", "admin_devices", "{ 10.100.0.10 }"]
    await lab.exec("hub1", "nft", "delete", "element", *element, check=True)
    try:
        cut = await lab.probe(admin_to_app)
        assert cut.outcome == "dropped"
    finally:
        await lab.exec("hub1", "nft", "add", "element", *element, check=True)
    assert (await lab.probe(admin_to_app)).outcome == "open"


async def test_root_namespace_is_unchanged_by_the_lab(lab_session: LabSession) -> None:
    assert NETNS_DIR.joinpath(lab_session.lab.topology.netns("hub1")).exists()
    assert root_network_snapshot() == lab_session.root_before


async def test_exec_runs_inside_the_node(lab: Lab) -> None:
    port = await lab.exec("hub1", "wg", "show", "wg0", "listen-port", check=True)
    assert port.stdout.strip() == "51820"
    links = await lab.exec("admin1", "ip", "-br", "addr", "show", "wg0", check=True)
    assert "10.100.0.10/24" in links.stdout


def _leftovers(prefix: str) -> list[str]:
    found = [f"netns {p.name}" for p in NETNS_DIR.glob(f"{prefix}-*")] if NETNS_DIR.exists() else []
    state = STATE_ROOT / prefix
    if state.exists():
        found.append(f"dir {state}")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if str(state) in line]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(state) in cmdline or f"/run/netns/{prefix}-" in cmdline:
                found.append(f"process {proc.name}: {cmdline[:80]}")
    return found


async def test_two_labs_coexist_with_two_hubs_and_down_removes_everything(lab: Lab) -> None:
    other = Lab(f"c{os.getpid() % 10_000_000}", hubs=2)
    try:
        await other.up()
        status = await other.status()
        assert [p.check.label for p in status.matrix if not p.passed] == []
        assert {h.hub for h in status.handshakes} == {"hub1", "hub2"}
        # The first lab is untouched by the second (same node names, same wg0, distinct prefixes).
        assert (await lab.probe(_check(lab, "admin1", "app1", 9090))).outcome == "open"
    finally:
        await other.down()
    assert _leftovers(other.prefix) == []


def test_down_after_a_crash_halfway_through_up_leaves_nothing() -> None:
    prefix = f"k{os.getpid() % 10_000_000}"
    cli = [sys.executable, "-m", "responder", "lab"]
    proc = subprocess.Popen([*cli, "up", "--prefix", prefix, "--hubs", "2"], start_new_session=True)
    try:
        # Kill it once it has built part of the lab.
        for _ in range(200):
            if len(list(NETNS_DIR.glob(f"{prefix}-*"))) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "lab up finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _leftovers(prefix) != []
    finally:
        down = subprocess.run([*cli, "down", "--prefix", prefix], capture_output=True, text=True, check=False)
    assert down.returncode == 0, down.stderr
    assert _leftovers(prefix) == []
