"""Cut-offs that survive the hub (issue 19, item 5): what the responder takes away through the hub agent
stays away when the hub rebuilds wg0 from its wg0.conf (`wg-quick down && up`, `wg syncconf` of the
stripped file) or reloads its ruleset file (`nft -f`), with the responder stopped; an undo puts it back in
the running hub and in the files. Packets prove each step."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator

import pytest

from responder.core.actions import Action, ActionType
from responder.core.identifiers import WireGuardKey
from responder.inventory import HubMode, HubSpec, PeerSpec
from responder.lab import Lab, faults
from responder.lab.lab import SUDO_ACCOUNT
from responder.lab.peers import EXTRA_PER_HUB, enroll, extra_peers
from responder.pep import SshHub
from tests.support.probes import eventually, tcp

pytestmark = pytest.mark.lab

SYNCCONF = "wg syncconf wg0 <(wg-quick strip wg0)"


def _spec(lab: Lab, mode: HubMode, sudo: bool = False) -> HubSpec:
    spec = lab.inventory.hub("hub1")
    key = lab.agent_key if mode is HubMode.AGENT else lab.plain_key
    ssh = spec.ssh.model_copy(update={"client_key": key, **({"user": SUDO_ACCOUNT} if sudo else {})})
    return spec.model_copy(update={"mode": mode, "sudo": sudo, "ssh": ssh})


def _peer(lab: Lab, name: str) -> PeerSpec:
    return next(p for p in lab.inventory.peers if p.name == name)


# Both go through the hub agent: its forced command, and agentless through sudo (deploy/hub/README.md).
THROUGH_THE_AGENT = [(HubMode.AGENT, False), (HubMode.AGENTLESS, True)]


@pytest.fixture(params=THROUGH_THE_AGENT, ids=["agent", "agentless-sudo"])
def spec(request: pytest.FixtureRequest, lab: Lab) -> HubSpec:
    return _spec(lab, *request.param)


@pytest.fixture
async def hub(spec: HubSpec) -> AsyncIterator[SshHub]:
    h = SshHub(spec)
    try:
        yield h
    finally:
        await h.close()


async def _reaches(lab: Lab, src: str, host: str, port: int = 9090) -> bool:
    """A new connection gets its line echoed (the lab's echo services), or, to sshd, connects at all."""
    if port != 22:
        return await tcp(lab, src, host, port, timeout=1.0) == "open"
    with lab.namespace(src) as ns:
        try:
            async with asyncio.timeout(1.0):
                sock = await ns.connect(host, port)
        except (TimeoutError, OSError):
            return False
    sock.close()
    return True


async def test_a_removed_peer_stays_cut_through_wg_quick_and_syncconf_and_the_undo_puts_it_back(
    lab: Lab, spec: HubSpec
) -> None:
    admin = _peer(lab, "admin1")
    key, conf = str(admin.public_key), lab.boot_config("hub1")
    assert await _reaches(lab, "admin1", "10.100.0.20")
    remove = Action(ActionType.REMOVE_PEER, "hub1", peer_key=admin.public_key)
    hub = SshHub(spec)
    try:
        (result,) = await hub.apply([remove])
    finally:
        await hub.close()  # the responder is gone from here on: nothing re-asserts the cut-off
    try:
        assert (result.ok, result.verified) == (True, True), result.detail
        assert "configuration files" not in result.detail  # persisted
        # The block the agent keeps to put back (it may hold a preshared key) stays on the hub.
        assert result.restore is not None and set(result.restore) == {"allowed_ips", "endpoint", "keepalive"}
        assert key not in conf.read_text() and "# admin1" not in conf.read_text()
        assert "# app1" in conf.read_text()
        assert not await _reaches(lab, "admin1", "10.100.0.20")

        await lab.restart_wireguard("hub1")  # wg-quick down wg0 && wg-quick up wg0
        assert key not in await faults.hub_peers(lab, "hub1")
        # wg0 is back and carries the others (app1 reaches the hub's monitoring port through it)...
        await eventually(lambda: _reaches(lab, "app1", "10.100.0.1", 9100), 10, "app1 through the new wg0")
        # ...but not admin1, which cannot even handshake: the hub no longer knows its key.
        assert not await _reaches(lab, "admin1", "10.100.0.20")
        assert not (await lab.exec("admin1", "ping", "-c", "1", "-W", "1", "-q", "10.100.0.1", timeout=5)).ok

        synced = await lab.exec("hub1", "bash", "-c", SYNCCONF)
        assert synced.ok, synced.stderr
        assert key not in await faults.hub_peers(lab, "hub1")
        assert not await _reaches(lab, "admin1", "10.100.0.20")
    finally:
        hub = SshHub(spec)  # the responder back, for the undo
        try:
            undo = await hub.undo(remove, result.restore)
        finally:
            await hub.close()
    assert (undo.ok, undo.verified) == (True, True), undo.detail
    assert "configuration files" not in undo.detail
    text = conf.read_text()
    assert key in text and "# admin1" in text  # its block back, comment and all
    await eventually(lambda: _reaches(lab, "admin1", "10.100.0.20"), 30, "admin1 back after the undo", every=0.2)

    await lab.restart_wireguard("hub1")
    assert key in await faults.hub_peers(lab, "hub1")
    await eventually(lambda: _reaches(lab, "admin1", "10.100.0.20"), 30, "admin1 through the new wg0", every=0.2)


async def test_a_quarantine_and_a_deleted_element_survive_nft_f_and_the_undo_survives_it_too(
    lab: Lab, hub: SshHub
) -> None:
    admin, app = _peer(lab, "admin1"), _peer(lab, "app1")
    ruleset = str(lab.ruleset_file("hub1"))
    actions = [
        Action(ActionType.DELETE_ELEMENT, "hub1", address=admin.tunnel_ip, set_name="admin_devices"),
        Action(ActionType.QUARANTINE, "hub1", address=app.tunnel_ip, set_name="quarantine", ttl_s=3600),
    ]
    # admin1 may ssh to the hub (admin_devices), app1 reach its monitoring port (app_servers).
    assert await _reaches(lab, "admin1", "10.100.0.1", 22)
    assert await _reaches(lab, "app1", "10.100.0.1", 9100)
    results = await hub.apply(actions)
    try:
        for r in results:
            assert (r.ok, r.verified) == (True, True), r.detail
            assert "configuration files" not in r.detail
        for _ in range(2):  # a reload, and one more: the include is applied the same way each time
            assert (await lab.exec("hub1", "nft", "-f", ruleset)).ok
            assert str(admin.tunnel_ip) not in await faults.hub_set(lab, "hub1", "admin_devices")
            assert await faults.hub_set(lab, "hub1", "quarantine") == {str(app.tunnel_ip)}
            assert not await _reaches(lab, "admin1", "10.100.0.1", 22)
            assert not await _reaches(lab, "app1", "10.100.0.1", 9100)
        listing = await lab.exec("hub1", "nft", "list", "set", "inet", "zerotrust", "quarantine")
        assert "expires" in listing.stdout  # re-added with the time it had left, not for good
    finally:
        for action, result in zip(reversed(actions), reversed(results), strict=True):
            undone = await hub.undo(action, result.restore)
            assert (undone.ok, undone.verified) == (True, True), undone.detail
    assert (await lab.exec("hub1", "nft", "-f", ruleset)).ok
    assert str(admin.tunnel_ip) in await faults.hub_set(lab, "hub1", "admin_devices")
    assert await faults.hub_set(lab, "hub1", "quarantine") == set()
    assert await _reaches(lab, "admin1", "10.100.0.1", 22)
    assert await _reaches(lab, "app1", "10.100.0.1", 9100)


async def test_agentless_as_root_changes_only_the_running_hub(lab: Lab) -> None:
    """The documented limitation of plain `wg`/`nft` commands as root: nothing edits the hub's files, so
    a rebuild of wg0 from its file brings a removed peer back (until the reconciler removes it again)."""
    admin = _peer(lab, "admin1")
    remove = Action(ActionType.REMOVE_PEER, "hub1", peer_key=admin.public_key)
    hub = SshHub(_spec(lab, HubMode.AGENTLESS))
    try:
        (result,) = await hub.apply([remove])
        assert (result.ok, result.verified) == (True, True)
        await lab.restart_wireguard("hub1")
        assert str(admin.public_key) in await faults.hub_peers(lab, "hub1")
    finally:
        undo = await hub.undo(remove, result.restore)
        await hub.close()
    assert undo.ok, undo.detail
    await eventually(lambda: _reaches(lab, "admin1", "10.100.0.20"), 30, "admin1 through the new wg0", every=0.2)


async def test_a_hub_file_that_cannot_be_written_is_reported_and_the_cut_off_stands(lab: Lab) -> None:
    """The hub's /etc/wireguard read-only (in the hub's mount namespace only): the running removal is made
    and verified, wg0.conf is left exactly as it was, and the action's detail says it was not kept."""
    admin = _peer(lab, "admin1")
    conf = lab.boot_config("hub1")
    before = conf.read_text()
    remove = Action(ActionType.REMOVE_PEER, "hub1", peer_key=admin.public_key)
    hub = SshHub(_spec(lab, HubMode.AGENT))
    assert (await lab.exec("hub1", "mount", "-o", "remount,ro,bind", "/etc/wireguard")).ok
    try:
        (result,) = await hub.apply([remove])
        assert (result.ok, result.verified) == (True, True), result.detail
        assert "not kept in the hub's configuration files" in result.detail
        assert "Read-only file system" in result.detail
        assert conf.read_text() == before
        assert not await _reaches(lab, "admin1", "10.100.0.20")
    finally:
        await lab.exec("hub1", "mount", "-o", "remount,rw,bind", "/etc/wireguard", check=True)
        undo = await hub.undo(remove, result.restore)
        await hub.close()
    assert (undo.ok, undo.verified) == (True, True), undo.detail
    assert conf.read_text() == before  # the block was never taken out, so none was put back twice
    await eventually(lambda: _reaches(lab, "admin1", "10.100.0.20"), 30, "admin1 back after the undo", every=0.2)


async def test_a_revoked_key_leaves_the_file_for_good(lab: Lab, hub: SshHub) -> None:
    """Key rotation: the peer's block leaves wg0.conf and is not kept to put back, so neither a rebuild of
    wg0 nor anything the responder may ask brings the key back."""
    (device,) = extra_peers(1, 1, name="rotated", first=EXTRA_PER_HUB - 1)  # a slot no other test uses
    device["public_key"] = base64.b64encode(os.urandom(32)).decode()  # a fresh key for each parameter
    device["sets"] = []  # a peer only: the lab's sets stay as other tests expect them
    await enroll(lab, [device])
    key, conf = str(device["public_key"]), lab.boot_config("hub1")
    assert f"# rotated{EXTRA_PER_HUB - 1}" in conf.read_text() and key in conf.read_text()
    (result,) = await hub.apply([Action(ActionType.ROTATE_KEY, "hub1", peer_key=WireGuardKey(key))])
    assert (result.ok, result.verified) == (True, True), result.detail
    assert key not in conf.read_text() and f"# rotated{EXTRA_PER_HUB - 1}" not in conf.read_text()
    records = await lab.exec("hub1", "cat", "/var/lib/responder-hub/removed-peers.json")
    assert key not in records.stdout
    await lab.restart_wireguard("hub1")
    assert key not in await faults.hub_peers(lab, "hub1")
    await eventually(lambda: _reaches(lab, "admin1", "10.100.0.20"), 30, "the others through the new wg0", every=0.2)
