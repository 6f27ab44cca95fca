"""Enforcement on a real hub, proven with packets, in both hub modes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from responder.core.actions import Action, ActionType
from responder.inventory import HubMode, HubSpec, PeerSpec
from responder.lab import Lab
from responder.lab.lab import SUDO_ACCOUNT
from responder.pep import HostKeyMismatch, HubUnreachable, SshHub
from responder.pep.transport import TransportSettings
from tests.support.probes import tcp

pytestmark = pytest.mark.lab


def _spec(lab: Lab, mode: HubMode, sudo: bool = False) -> HubSpec:
    spec = lab.inventory.hub("hub1")
    key = lab.agent_key if mode is HubMode.AGENT else lab.plain_key
    ssh = spec.ssh.model_copy(update={"client_key": key, **({"user": SUDO_ACCOUNT} if sudo else {})})
    return spec.model_copy(update={"mode": mode, "sudo": sudo, "ssh": ssh})


def _peer(lab: Lab, name: str) -> PeerSpec:
    return next(p for p in lab.inventory.peers if p.name == name)


@pytest.fixture(
    params=[(HubMode.AGENT, False), (HubMode.AGENTLESS, False), (HubMode.AGENTLESS, True)],
    ids=["agent", "agentless", "agentless-sudo"],
)
async def hub(request: pytest.FixtureRequest, lab: Lab) -> AsyncIterator[SshHub]:
    # agentless-sudo: the lab hub's `responder` account under the shipped sudoers rule (deploy/hub/).
    h = SshHub(_spec(lab, *request.param))
    try:
        yield h
    finally:
        await h.close()


async def _tcp(lab: Lab, src: str, host: str, port: int = 9090, timeout: float = 1.5) -> str:
    return await tcp(lab, src, host, port, timeout)


async def _ping(lab: Lab, src: str, host: str) -> bool:
    return (await lab.exec(src, "ping", "-c", "1", "-W", "1", "-q", host, timeout=5)).ok


async def test_remove_peer_cuts_the_tunnel_and_restore_brings_it_back(lab: Lab, hub: SshHub) -> None:
    admin = _peer(lab, "admin1")
    assert await _tcp(lab, "admin1", "10.100.0.20") == "open"
    (result,) = await hub.apply([Action(ActionType.REMOVE_PEER, "hub1", peer_key=admin.public_key)])
    try:
        assert (result.ok, result.verified) == (True, True)
        assert result.restore == {
            "allowed_ips": ["10.100.0.10/32"],
            "endpoint": result.restore["endpoint"],
            "keepalive": 25,
        }
        assert await _tcp(lab, "admin1", "10.100.0.20") == "dropped"
        assert await _tcp(lab, "admin1", "10.100.0.1", 22) == "dropped"
        assert not await _ping(lab, "admin1", "10.100.0.20")
    finally:
        undo = await hub.undo(result.action, result.restore)
    assert (undo.ok, undo.verified) == (True, True)
    # The peer's next handshake brings the tunnel back.
    deadline = time.monotonic() + 30
    while await _tcp(lab, "admin1", "10.100.0.20") != "open":
        assert time.monotonic() < deadline, "admin1 did not come back after restore"
        await asyncio.sleep(0.5)


async def test_delete_element_then_kill_flows_cuts_an_established_connection(lab: Lab, hub: SshHub) -> None:
    admin = _peer(lab, "admin1")
    delete = Action(ActionType.DELETE_ELEMENT, "hub1", address=admin.tunnel_ip, set_name="admin_devices")
    kill = Action(ActionType.KILL_FLOWS, "hub1", address=admin.tunnel_ip)
    with lab.namespace("admin1") as ns:
        async with asyncio.timeout(3):
            sock = await ns.connect("10.100.0.20", 9090)
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"before\n")
            assert await reader.readline() == b"before\n"
        try:
            (deleted,) = await hub.apply([delete])
            assert (deleted.ok, deleted.verified) == (True, True)
            assert await _tcp(lab, "admin1", "10.100.0.20") == "dropped"
            # The seed's ruleset accepts established flows first: the open session survives the delete...
            async with asyncio.timeout(3):
                writer.write(b"still\n")
                assert await reader.readline() == b"still\n"
            (killed,) = await hub.apply([kill])
            assert (killed.ok, killed.verified) == (True, True)
            # ...and dies once its flows are gone.
            writer.write(b"after\n")
            with pytest.raises((TimeoutError, ConnectionError)):
                async with asyncio.timeout(2):
                    line = await reader.readline()
                    if not line:
                        raise ConnectionResetError("closed")
        finally:
            writer.close()
            undo = await hub.undo(delete, None)
    assert (undo.ok, undo.verified) == (True, True)
    assert await _tcp(lab, "admin1", "10.100.0.20") == "open"


async def test_quarantine_expires_in_the_kernel(lab: Lab, hub: SshHub) -> None:
    app = _peer(lab, "app1")
    (result,) = await hub.apply(
        [Action(ActionType.QUARANTINE, "hub1", address=app.tunnel_ip, set_name="quarantine", ttl_s=2)]
    )
    assert (result.ok, result.verified) == (True, True)
    assert await _tcp(lab, "admin1", "10.100.0.20") == "dropped"
    await asyncio.sleep(2.5)
    assert await _tcp(lab, "admin1", "10.100.0.20") == "open"


async def test_a_hub_with_another_host_key_is_refused(lab: Lab) -> None:
    spec = _spec(lab, HubMode.AGENT)
    other = lab.inventory.hub("hub1").ssh.host_key  # a valid key line, but we forge a different key
    forged = other.split()[0] + " AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    hub = SshHub(spec.model_copy(update={"ssh": spec.ssh.model_copy(update={"host_key": forged})}))
    try:
        with pytest.raises(HostKeyMismatch, match="does not match the pinned key"):
            await hub.call("peers", {"interface": "wg0"})
    finally:
        await hub.close()


async def test_a_hub_that_is_down_gives_a_clear_error_after_retries_not_a_hang(lab: Lab) -> None:
    spec = _spec(lab, HubMode.AGENT)
    down = spec.model_copy(update={"ssh": spec.ssh.model_copy(update={"host": "198.18.1.250"})})
    settings = TransportSettings(connect_timeout=0.5, operation_timeout=1.0, retries=2, backoff_base=0.05)
    hub = SshHub(down, settings)
    started = time.monotonic()
    try:
        with pytest.raises(HubUnreachable, match=r"198\.18\.1\.250"):
            await hub.call("peers", {"interface": "wg0"})
    finally:
        await hub.close()
    assert time.monotonic() - started < 6


async def test_200_concurrent_operations_complete_without_a_refused_channel(lab: Lab, hub: SshHub) -> None:
    results = await asyncio.gather(
        *(hub.call("list_set", {"table": "zerotrust", "set": "admin_devices"}) for _ in range(200)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert all(r["elements"] == ["10.100.0.10"] for r in results if isinstance(r, dict))


async def test_results_come_back_in_the_order_of_the_actions_whatever_the_plan_order(lab: Lab, hub: SshHub) -> None:
    admin = _peer(lab, "admin1")
    actions = [
        Action(ActionType.DELETE_ELEMENT, "hub1", address=admin.tunnel_ip, set_name="admin_devices"),
        Action(ActionType.KILL_FLOWS, "hub1", address=admin.tunnel_ip),
        Action(ActionType.REMOVE_PEER, "hub1", peer_key=admin.public_key),
    ]
    results = await hub.apply(actions)
    try:
        assert [r.action for r in results] == actions
        assert results[2].restore is not None and results[2].restore["allowed_ips"] == ["10.100.0.10/32"]
        assert results[1].restore is None
    finally:
        for action, result in zip(reversed(actions), reversed(results), strict=True):
            undone = await hub.undo(action, result.restore)
            assert undone.ok, undone.detail
    assert await _tcp(lab, "admin1", "10.100.0.20", timeout=3) == "open"
