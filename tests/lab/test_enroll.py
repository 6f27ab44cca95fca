"""`responder hubs enroll` and `hubs check` on a lab built without an inventory or an agent: the real CLI,
the real sshd, and packets proving the enrolled inventory enforces."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responder.core.actions import Action, ActionType
from responder.enrollment import AgentRelease, EnrollError, Enrollment, Target, enroll, fingerprint
from responder.inventory import HubMode, Inventory
from responder.lab import Lab
from responder.pep import SshHub
from tests.support.probes import tcp

pytestmark = pytest.mark.lab

HUB_ADDRESS = "198.18.1.1"


@pytest.fixture(scope="module")
async def bare(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    """A one-hub lab whose hub only lets the bootstrap key in as root: nothing enrolled yet."""
    lab = Lab(f"e{os.getpid() % 10_000_000}", hubs=1, bare=True)
    try:
        await lab.up()
        yield lab
    finally:
        await lab.down()


async def _responder(*argv: str) -> tuple[int, str]:
    """Run the real CLI (no terminal on stdin); exit status and stdout+stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "responder", *argv,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _enroll_argv(lab: Lab, inventory: Path, fp: str, *extra: str) -> list[str]:
    return [
        "hubs", "enroll", HUB_ADDRESS, "--name", "hub1",
        "--identity", str(lab.bootstrap_key),
        "--responder-key", str(lab.agent_key.with_suffix(".pub")),
        "--expect-fingerprint", fp,
        "--deny-set", "zerotrust:quarantine",
        "--netns", str(lab.netns_path("soc")),
        "--inventory", str(inventory),
        *extra,
    ]  # fmt: skip


def _request(lab: Lab, inventory: Path, *, mode: HubMode = HubMode.AGENT, key: Path | None = None) -> Enrollment:
    return Enrollment(
        target=Target(HUB_ADDRESS, 22, "root", lab.bootstrap_key, lab.netns_path("soc")),
        name="hub1",
        inventory_path=inventory,
        responder_key=key or lab.agent_key.with_suffix(".pub"),
        mode=mode,
    )


def _authorized_keys(lab: Lab) -> str:
    return (lab.node_dir("hub1") / "root" / ".ssh" / "authorized_keys").read_text()


async def _ping(lab: Lab, src: str, host: str) -> bool:
    return (await lab.exec(src, "ping", "-c", "1", "-W", "1", "-q", host, timeout=5)).ok


async def test_a_wrong_fingerprint_is_refused_and_nothing_is_installed(bare: Lab, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    keys_before = _authorized_keys(bare)
    wrong = "SHA256:" + "A" * 43
    status, out = await _responder(*_enroll_argv(bare, inventory, wrong))
    assert status == 2, out
    assert f"is not the expected {wrong}" in out
    assert not inventory.exists()
    assert _authorized_keys(bare) == keys_before
    assert not any((bare.node_dir("hub1") / "sbin").iterdir())

    # No terminal and no expected fingerprint: refused, with what to pass.
    argv = _enroll_argv(bare, inventory, wrong)
    del argv[argv.index("--expect-fingerprint") : argv.index("--expect-fingerprint") + 2]
    status, out = await _responder(*argv)
    assert status == 2 and "pass --expect-fingerprint" in out, out
    assert not inventory.exists()

    # The operator, asked, says no.
    asked: list[str] = []

    def no(question: str) -> bool:
        asked.append(question)
        return False

    with pytest.raises(EnrollError, match="host key not confirmed"):
        await enroll(_request(bare, inventory), confirm=no, say=lambda _: None)
    assert asked == [f"Trust {fingerprint(bare.host_key('hub1').read_text())} as the host key of {HUB_ADDRESS}?"]
    assert not inventory.exists() and _authorized_keys(bare) == keys_before
    assert not any((bare.node_dir("hub1") / "sbin").iterdir())


async def test_enroll_then_check_then_the_enrolled_inventory_enforces(bare: Lab, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    owners = tmp_path / "owners.csv"
    owners.write_text("peer,owner\nadmin1,alice@example.com\n")
    fp = fingerprint(bare.host_key("hub1").read_text())
    keys_before = _authorized_keys(bare)

    dry_status, dry = await _responder(*_enroll_argv(bare, inventory, fp, "--dry-run"))
    assert dry_status == 0, dry
    assert "+- name: admin1" in dry and "dry run: nothing was changed" in dry
    assert not inventory.exists() and _authorized_keys(bare) == keys_before

    status, out = await _responder(*_enroll_argv(bare, inventory, fp, "--owners", str(owners)))
    assert status == 0, out
    agent = AgentRelease.shipped()
    assert f"agent {agent.version} installed at /usr/local/sbin/responder-hub-agent, sha256 {agent.sha256}" in out
    assert "owner unknown for 1 peers: fill them in" in out
    inv = Inventory.load(inventory)
    hub = inv.hub("hub1")
    assert hub.ssh.host_key == " ".join(bare.host_key("hub1").read_text().split()[:2])
    peers = {p.name: p for p in inv.peers}
    assert set(peers) == {"admin1", "app1"}  # named from the `# name` comments of the hub's wg0.conf
    assert peers["admin1"].owner == "alice@example.com" and peers["app1"].owner is None
    assert peers["admin1"].sets == ("admin_devices",) and peers["app1"].sets == ("app_servers",)
    lines = _authorized_keys(bare).splitlines()
    agent_key = bare.agent_key.with_suffix(".pub").read_text().split()[1]
    forced = [line for line in lines if agent_key in line]
    assert forced == [
        f'from="198.18.0.2",restrict,command="/usr/local/sbin/responder-hub-agent" {forced[0].split(" ", 1)[1]}'
    ]
    assert keys_before.splitlines()[0] in lines  # the bootstrap key's line is kept

    # Again: nothing changes (one line for the key, the same inventory).
    text = inventory.read_text()
    status, out = await _responder(*_enroll_argv(bare, inventory, fp, "--owners", str(owners)))
    assert status == 0, out
    assert "inventory unchanged" in out and "authorized_keys entry already present" in out
    assert inventory.read_text() == text and _authorized_keys(bare).splitlines() == lines

    status, out = await _responder("hubs", "check", "--inventory", str(inventory))
    assert (status, out.strip()) == (0, "hub1: ok (2 peers)")

    # Enforcement through the enrolled inventory, proven with packets.
    h = SshHub(hub, peers=inv.allowed_ips("hub1"))
    try:
        assert await _ping(bare, "admin1", "10.100.0.20")  # admin1 to app1, through the hub
        (result,) = await h.apply([Action(ActionType.REMOVE_PEER, "hub1", peer_key=peers["admin1"].public_key)])
        try:
            assert (result.ok, result.verified) == (True, True)
            assert not await _ping(bare, "admin1", "10.100.0.20")
        finally:
            undo = await h.undo(result.action, result.restore)
        assert (undo.ok, undo.verified) == (True, True)
        deadline = time.monotonic() + 30
        while await tcp(bare, "admin1", "10.100.0.20", 9090, 1.5) != "open":
            assert time.monotonic() < deadline, "admin1 did not come back after the undo"
            await asyncio.sleep(0.5)
        assert await _ping(bare, "admin1", "10.100.0.20")
    finally:
        await h.close()


async def test_check_reports_each_problem_on_its_own_line(bare: Lab, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    fp = fingerprint(bare.host_key("hub1").read_text())
    status, out = await _responder(*_enroll_argv(bare, inventory, fp))
    assert status == 0, out
    inv = Inventory.load(inventory)
    admin, app = sorted(inv.peers, key=lambda p: p.name)
    ghost = base64.b64encode(bytes(range(32))).decode()
    stray = admin.model_copy(update={"name": "ghost", "public_key": ghost, "tunnel_ip": "10.100.0.99"})
    tampered = inv.model_copy(
        update={
            "peers": (stray, app.model_copy(update={"sets": ("app_servers", "nosuchset")})),
        }
    )
    (tmp_path / "tampered.yaml").write_text(Inventory.model_validate(tampered.model_dump()).to_yaml())
    agent = bare.node_dir("hub1") / "sbin" / "responder-hub-agent"
    shipped = agent.read_bytes()
    agent.write_bytes(shipped + b"# changed on the hub\n")
    try:
        status, out = await _responder("hubs", "check", "--inventory", str(tmp_path / "tampered.yaml"))
    finally:
        agent.write_bytes(shipped)
    assert status == 1, out
    release = AgentRelease.shipped()
    assert sorted(out.strip().splitlines()) == sorted(
        [
            f"hub1: agent version: expected {release.version} sha256 {release.sha256[:16]}, found "
            f"{release.version} sha256 {AgentRelease.of(shipped + b'# changed on the hub' + bytes([10])).sha256[:16]}",
            f"hub1: peer ghost ({ghost}) is in the inventory but not on the hub",
            f"hub1: peer {admin.public_key} is on the hub but not in the inventory",
            "hub1: set zerotrust nosuchset named in the inventory is missing on the hub",
        ]
    )

    other = inv.hub("hub1").ssh.model_copy(update={"host_key": bare.agent_key.with_suffix(".pub").read_text()})
    impostor = inv.model_copy(update={"hubs": (inv.hub("hub1").model_copy(update={"ssh": other}),)})
    (tmp_path / "impostor.yaml").write_text(impostor.to_yaml())
    status, out = await _responder("hubs", "check", "--inventory", str(tmp_path / "impostor.yaml"))
    assert status == 1 and out.startswith("hub1: host key mismatch:"), out

    # And enroll refuses to re-pin a hub the inventory knows by another key.
    status, out = await _responder(*_enroll_argv(bare, tmp_path / "impostor.yaml", fp))
    assert status == 2 and "is in the inventory with host key" in out, out


async def test_agentless_enrollment_confirmed_by_the_operator_authorizes_the_key_for_plain_commands(
    bare: Lab, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    said: list[str] = []
    # The plain key is also the bootstrap key here: its line is replaced by the enrolled one, not doubled.
    await enroll(
        _request(bare, inventory, mode=HubMode.AGENTLESS, key=bare.plain_key.with_suffix(".pub")),
        confirm=lambda _: True,
        say=said.append,
    )
    assert not any("agent" in line and "installed" in line for line in said), said
    assert "verified: the responder's key reaches the hub" in said
    hub = Inventory.load(inventory).hub("hub1")
    assert (hub.mode, hub.ssh.client_key) == (HubMode.AGENTLESS, bare.plain_key)
    plain = bare.plain_key.with_suffix(".pub").read_text().split()[1]
    assert [line for line in _authorized_keys(bare).splitlines() if plain in line] == [
        f'from="198.18.0.2",no-port-forwarding,no-agent-forwarding,no-X11-forwarding ssh-ed25519 {plain} '
        f"responder@{bare.prefix}"
    ]
    status, out = await _responder("hubs", "check", "--inventory", str(inventory))
    assert (status, out.strip()) == (0, "hub1: ok (2 peers)")
