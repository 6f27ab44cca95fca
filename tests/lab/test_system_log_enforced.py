"""Okta events that never came through a hook, read from the System Log contract server by `responder run`'s
poller, enforced on the lab's hub: packets prove it.

ThreatInsight's `security.threat.detected` is not hook-eligible; here it names admin1's tunnel address and
quarantines alice's device (45 points: the default policy's quarantine). Then alice is deactivated in Okta:
`user.lifecycle.deactivate` offboards her (the default policy's `offboard`: her peers removed, no approval).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.config import Okta, OktaSystemLog, Settings
from responder.lab import Lab
from responder.pep import SshHub
from tests.support.okta_contract import OktaSystemLogContract, log_event
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
RULES = Path(__file__).resolve().parents[2] / "rules"
ADMIN, TOKEN = "admin-e2e-token-value", "00a-okta-api-token-for-the-lab-test"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def contract() -> AsyncIterator[OktaSystemLogContract]:
    server = OktaSystemLogContract(TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def _decisions(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/decisions", headers=ADMIN_HEADERS) as r:
        assert r.status == 200
        return list((await r.json())["decisions"])


async def test_threat_and_deactivation_read_from_the_system_log_quarantine_then_cut_off(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path, contract: OktaSystemLogContract
) -> None:
    admin1 = next(p for p in lab.inventory.peers if p.name == "admin1")
    assert admin1.owner == "alice@example.com"
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=lab.inventory_path, rules=(RULES,),
        admin_token=ADMIN, reconcile_interval_s=0.5, okta_api_token=TOKEN,
        okta=Okta(system_log=OktaSystemLog(org_url=contract.url, interval_s=0.2)),
    )  # fmt: skip
    assert await tcp(lab, "admin1", "10.100.0.20") == "open"
    hub = SshHub(lab.inventory.hub("hub1"))
    try:
        async with running(settings) as (_, base):

            async def blocked() -> bool:
                return await tcp(lab, "admin1", "10.100.0.20", timeout=0.3) != "open"

            async def peer_gone() -> bool:
                peers = (await hub.call("peers", {"interface": "wg0"}))["peers"]
                return str(admin1.public_key) not in {p["key"] for p in peers}

            contract.add(log_event("security.threat.detected", actor_ip=str(admin1.tunnel_ip), severity="WARN"))
            await eventually(blocked, 15, "admin1 quarantined after ThreatInsight named its address")
            (quarantine,) = await _decisions(http, base)
            assert (quarantine["response"], quarantine["subject"]) == ("quarantine", "user:alice@example.com")
            assert not await peer_gone()

            contract.add(log_event("user.lifecycle.deactivate", target_login="alice@example.com"))
            await eventually(peer_gone, 15, "admin1's peer removed from hub1 after alice was deactivated")
            assert await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) != "open"
            active = [d for d in await _decisions(http, base) if d["state"] == "active"]
            assert [(d["response"], d["subject"]) for d in active] == [("offboard", "user:alice@example.com")]
            assert not any(r.status != 200 for r in contract.requests)  # read from the log, nothing else

            # Put the shared lab back for the tests after this one.
            async with http.post(
                f"{base}/api/decisions/{active[0]['id']}/undo", headers=ADMIN_HEADERS, json={"actor": "e2e"}
            ) as r:
                assert r.status == 202, await r.text()

            async def open_again() -> bool:
                return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

            await eventually(open_again, 10, "admin1 reaches app1 again after undo")
    finally:
        await hub.close()
