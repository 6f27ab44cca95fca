"""One person, two enforcement points: alice's laptop is a WireGuard peer on the lab's hub1 and her phone
is a device in a tailnet. One decision contains her on both: packets prove it on the hub, the tailnet's
API (a local server implementing Tailscale's documented contract, not Tailscale itself) shows her
device's key expired."""

from __future__ import annotations

import base64
import copy
import os
import time
import uuid
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
import yaml

from responder.config import Settings
from responder.lab import Lab
from tests.support.overlay_contracts import TailscaleContract
from tests.support.payloads import payload
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
RULES = Path(__file__).resolve().parents[2] / "rules"
ADMIN = {"Authorization": "Bearer admin-overlay-token"}


async def test_one_decision_contains_a_person_on_a_hub_and_in_a_tailnet(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone_key = base64.b64encode(os.urandom(32)).decode()
    tailnet = TailscaleContract("tskey-api-lab", "client", "secret", {"tag:quarantine"})
    tailnet.add_device("phone1", "alice@example.com", phone_key, "100.64.0.5")
    url = await tailnet.start() + "/api/v2"
    monkeypatch.setenv("RESPONDER_TEST_TS_KEY", "tskey-api-lab")
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    inventory["overlays"] = [
        {"name": "tailnet", "kind": "tailscale", "base_url": url,
         "credentials": {"token": {"env": "RESPONDER_TEST_TS_KEY"}}},
    ]  # fmt: skip
    inventory["peers"].append(
        {
            "name": "alice-phone",
            "hub": "tailnet",
            "public_key": phone_key,
            "tunnel_ip": "100.64.0.5",
            "owner": "alice@example.com",
        }
    )
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=tmp_path / "inventory.yaml", rules=(RULES,),
        okta_secret="okta-overlay-secret", admin_token="admin-overlay-token", monitor_interval_s=None,
        reconcile_interval_s=3600,
    )  # fmt: skip
    body = copy.deepcopy(payload("okta/batch.json"))
    body["data"]["events"] = body["data"]["events"][:1]
    body["data"]["events"][0]["uuid"] = str(uuid.uuid4())
    try:
        async with running(settings) as (_, base), aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/hooks/okta", json=body, headers={"Authorization": "okta-overlay-secret"}
            ) as r:
                assert r.status == 200

            async def decided_and_done() -> bool:
                async with http.get(f"{base}/api/decisions", headers=ADMIN) as r:
                    decisions = (await r.json())["decisions"]
                if not decisions:
                    return False
                async with http.get(f"{base}/api/decisions/{decisions[0]['id']}", headers=ADMIN) as r:
                    shown = await r.json()
                return bool(shown["actions"]) and all(a["state"] == "done" for a in shown["actions"])

            await eventually(decided_and_done, 5, "the decision is carried out")
            async with http.get(f"{base}/api/decisions", headers=ADMIN) as r:
                (decision,) = (await r.json())["decisions"]
            async with http.get(f"{base}/api/decisions/{decision['id']}", headers=ADMIN) as r:
                actions = (await r.json())["actions"]
            where = sorted((a["action"]["hub"], a["action"]["type"]) for a in actions)
            assert where == [
                ("hub1", "delete_element"), ("hub1", "kill_flows"), ("hub1", "remove_peer"),
                ("tailnet", "remove_peer"),
            ]  # fmt: skip
            assert all(a["verified"] for a in actions), actions
            assert await tcp(lab, "admin1", "10.100.0.20") != "open"
            expires = datetime.fromisoformat(tailnet.devices["phone1"]["expires"].replace("Z", "+00:00"))
            assert expires.timestamp() <= time.time()

            async with http.post(f"{base}/api/decisions/{decision['id']}/undo", headers=ADMIN, json={}) as r:
                assert r.status == 202

            async def laptop_back() -> bool:
                return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

            await eventually(laptop_back, 10, "the laptop is back on hub1 after undo")
    finally:
        await tailnet.stop()
