"""Agentless mode never receives the hub's private key: whatever it reads from a real hub (peers for the
status and the monitor, the state before and after a removal) holds no private or preshared key, in
both agentless forms (as root with plain commands, and as the `responder` account through sudo)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from responder.core.actions import Action, ActionType
from responder.inventory import HubMode
from responder.lab import Lab
from responder.lab.lab import SUDO_ACCOUNT
from responder.pep import SshHub

pytestmark = pytest.mark.lab


class Recorded:
    """Everything the hub sent back over its exec channels."""

    def __init__(self, hub: SshHub) -> None:
        self.received: list[str] = []
        run = hub.transport.run

        async def recording(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
            status, out, err = await run(argv, stdin)
            self.received += [out, err]
            return status, out, err

        hub.transport.run = recording  # type: ignore[method-assign]


@pytest.mark.parametrize("sudo", [False, True], ids=["root", "sudo"])
async def test_agentless_reads_never_carry_the_hub_private_key(lab: Lab, sudo: bool) -> None:
    private = (await lab.exec("hub1", "wg", "show", "wg0", "private-key", check=True)).stdout.strip()
    spec = lab.inventory.hub("hub1")
    ssh = spec.ssh.model_copy(update={"client_key": lab.plain_key, **({"user": SUDO_ACCOUNT} if sudo else {})})
    hub = SshHub(spec.model_copy(update={"mode": HubMode.AGENTLESS, "sudo": sudo, "ssh": ssh}))
    seen = Recorded(hub)
    app = next(p for p in lab.inventory.peers if p.name == "app1")
    try:
        status = await hub.status()
        assert status["reachable"] is True, status
        assert {tuple(p["allowed_ips"]) for p in status["peers"]} == {("10.100.0.10/32",), ("10.100.0.20/32",)}
        assert all(p["keepalive"] == 25 and p["latest_handshake"] > 0 for p in status["peers"])
        (removal,) = await hub.apply([Action(ActionType.REMOVE_PEER, "hub1", peer_key=app.public_key)])
        assert (removal.ok, removal.verified) == (True, True), removal.detail
        assert removal.restore is not None and removal.restore["allowed_ips"] == ["10.100.0.20/32"]
    finally:
        if "removal" in locals() and removal.ok:
            undo = await hub.undo(removal.action, removal.restore)
            assert (undo.ok, undo.verified) == (True, True), undo.detail
        await hub.close()
    assert seen.received, "nothing was read from the hub"
    assert not [text for text in seen.received if private in text]
