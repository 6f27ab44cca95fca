"""The lab's faults are real: a partition drops packets on the hub, a restart kills processes, a reboot
brings back what the responder took away."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from responder.lab import Lab, faults
from responder.pep import SshHub
from tests.support.probes import eventually, tcp

pytestmark = pytest.mark.lab


def _hub1(lab: Lab) -> str:
    return str(lab.topology.node("hub1").underlay)


async def _ssh_answers(lab: Lab, timeout: float = 1.0) -> bool:
    with lab.namespace("soc") as soc:
        try:
            async with asyncio.timeout(timeout):
                sock = await soc.connect(_hub1(lab), 22)
        except (TimeoutError, OSError):
            return False
    sock.close()
    return True


async def _banner(lab: Lab) -> tuple[socket.socket, asyncio.StreamReader, asyncio.StreamWriter]:
    with lab.namespace("soc") as soc:
        sock = await soc.connect(_hub1(lab), 22)
    reader, writer = await asyncio.open_connection(sock=sock)
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"SSH-2.0-")
    return sock, reader, writer


@pytest.mark.parametrize("answers_only", [False, True], ids=["both-ways", "answers-only"])
async def test_a_partition_drops_the_management_path_until_healed(lab: Lab, answers_only: bool) -> None:
    assert await _ssh_answers(lab)
    _, reader, writer = await _banner(lab)  # an established SSH connection
    try:
        await faults.partition(lab, "hub1", answers_only=answers_only)
        await faults.partition(lab, "hub1", answers_only=answers_only)  # idempotent
        assert not await _ssh_answers(lab)  # new connections: the SYN vanishes
        writer.write(b"SSH-2.0-probe\r\n")  # established ones: no answer, not a reset
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 1.5)
        assert await tcp(lab, "admin1", "10.100.0.20") == "open"  # the tunnels are not affected
        await faults.heal(lab, "hub1")
        await faults.heal(lab, "hub1")  # idempotent
        assert await _ssh_answers(lab)
        # TCP retransmits what waited: the hub answers it after the heal, as in the issue.
        assert await asyncio.wait_for(reader.read(1), 10) != b""
    finally:
        writer.close()
        await faults.heal(lab, "hub1")


async def test_partitioned_heals_even_when_the_block_fails(lab: Lab) -> None:
    with pytest.raises(RuntimeError):
        async with faults.partitioned(lab, "hub1"):
            assert not await _ssh_answers(lab)
            raise RuntimeError("boom")
    assert await _ssh_answers(lab)


async def test_restarting_sshd_ends_established_connections_and_it_answers_again(lab: Lab) -> None:
    _, reader, writer = await _banner(lab)
    try:
        await faults.restart_sshd(lab, "hub1")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the connection ended
    finally:
        writer.close()
    assert await _ssh_answers(lab)
    hub = SshHub(lab.inventory.hub("hub1"))
    try:
        assert (await hub.call("peers", {"interface": "wg0"}))["peers"]
    finally:
        await hub.close()


async def test_kill_agents_kills_the_running_hub_agent(lab: Lab) -> None:
    hub = SshHub(lab.inventory.hub("hub1"))
    try:
        await hub.call("peers", {"interface": "wg0"})  # the agent runs on the open channel
        assert await faults.kill_agents(lab, "hub1") >= 1
        assert await faults.kill_agents(lab, "hub1") == 0
    finally:
        await hub.close()


async def test_a_reboot_brings_back_removed_peers_and_deleted_elements(lab: Lab) -> None:
    admin1 = next(p for p in lab.inventory.peers if p.name == "admin1")
    key = str(admin1.public_key)
    assert key in await faults.hub_peers(lab, "hub1")
    assert "10.100.0.10" in await faults.hub_set(lab, "hub1", "admin_devices")
    assert (await lab.exec("hub1", "wg", "set", "wg0", "peer", key, "remove")).ok
    assert (await lab.exec("hub1", "nft", "delete element inet zerotrust admin_devices { 10.100.0.10 }")).ok
    assert (await lab.exec("hub1", "nft", "add element inet zerotrust quarantine { 10.100.0.20 timeout 1h }")).ok
    assert key not in await faults.hub_peers(lab, "hub1")
    assert await tcp(lab, "admin1", "10.100.0.20") != "open"

    await faults.reboot(lab, "hub1")

    assert key in await faults.hub_peers(lab, "hub1")
    assert "10.100.0.10" in await faults.hub_set(lab, "hub1", "admin_devices")
    assert await faults.hub_set(lab, "hub1", "quarantine") == set()

    async def reachable() -> bool:
        return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

    await eventually(reachable, 10, "admin1 reaches app1 through the rebooted hub")
    assert (await lab.status()).healthy


async def test_the_cli_partitions_and_heals_a_hub(lab: Lab) -> None:
    async def cli(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "responder", "lab", "fault", *args, "hub1", "--prefix", lab.prefix,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    try:
        assert "both ways" in await cli("partition")
        assert not await _ssh_answers(lab)
        assert "restored" in await cli("heal")
        assert await _ssh_answers(lab)
    finally:
        await faults.heal(lab, "hub1")
