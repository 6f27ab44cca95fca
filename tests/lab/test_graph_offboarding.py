"""Offboarding from Entra, with packets: a user disabled in the Graph contract server (which notifies the
service as Graph would) has their devices cut off on the lab's hub."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from responder.config import Entra, EntraSubscriptions, Listen, Settings
from responder.lab import Lab
from responder.pep import SshHub
from responder.service.service import Service, hubs_from, load_inventory
from tests.support.graph_contract import running_contract
from tests.support.probes import eventually, tcp

pytestmark = pytest.mark.lab
RULES = Path(__file__).resolve().parents[2] / "rules"
CLIENT_STATE, ADMIN = "graph-lab-client-state", "admin-graph-lab-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[Service]:
    """On the port its settings name: Graph must know the notification URL before the service starts."""
    service = Service(settings, hubs=hubs_from(load_inventory(settings)), instance="graph-lab")
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        async with asyncio.timeout(20):
            while not service.started.is_set():
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
        yield service
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await asyncio.gather(task, return_exceptions=True)


async def test_disabling_a_user_in_entra_cuts_their_devices_off(lab: Lab, tmp_path: Path) -> None:
    admin1 = next(p for p in lab.inventory.peers if p.name == "admin1")
    assert await tcp(lab, "admin1", "10.100.0.20") == "open"
    graph = await running_contract()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        listen=Listen(port=port), journal=f"sqlite:///{tmp_path}/journal.db", inventory=lab.inventory_path,
        rules=(RULES,), admin_token=ADMIN, entra_client_state=CLIENT_STATE, reconcile_interval_s=0.5,
        entra_client_secret=graph.client_secret,
        entra=Entra(
            tenant_id=graph.tenant, client_id=graph.client_id, graph_url=graph.graph_url, login_url=graph.url,
            subscriptions=EntraSubscriptions(
                notification_url=f"{base}/hooks/entra", lifecycle_notification_url=f"{base}/hooks/entra/lifecycle",
                check_interval_s=0.1,
            ),
        ),
    )  # fmt: skip
    alice = graph.add_user("alice@example.com")
    hub = SshHub(lab.inventory.hub("hub1"))
    try:
        async with _service(settings):

            async def subscribed() -> bool:
                return bool(graph.subscriptions)

            await eventually(subscribed, 10.0, "the users subscription created")
            await graph.disable_user(alice)

            async def cut_off() -> bool:
                peers = (await hub.call("peers", {"interface": "wg0"}))["peers"]
                return str(admin1.public_key) not in {p["key"] for p in peers}

            await eventually(cut_off, 5.0, "admin1's peer removed from hub1")
            assert await tcp(lab, "admin1", "10.100.0.20") != "open"
            await _undo_all(base)  # the lab is shared by the session: admin1 back as it was

            async def restored() -> bool:
                return await tcp(lab, "admin1", "10.100.0.20") == "open"

            await eventually(restored, 5.0, "admin1 reaches app1 again after undo")
    finally:
        await hub.close()
        await graph.stop()


async def _undo_all(base: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{base}/api/decisions", headers=headers) as r:
            decisions = (await r.json())["decisions"]
        assert [d["response"] for d in decisions] == ["offboard"]
        for d in decisions:
            async with http.post(f"{base}/api/decisions/{d['id']}/undo", headers=headers, json={"actor": "lab"}) as r:
                assert r.status == 202, await r.text()
