"""A person's overlay devices are found on the overlay itself: with only the tailnet in the inventory (no
device written down), alice's risk reaches her phone. The tailnet is a local server implementing
Tailscale's documented API contract, not Tailscale."""

from __future__ import annotations

import asyncio
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
from tests.support.overlay_contracts import TailscaleContract
from tests.support.payloads import payload
from tests.support.service import running

RULES = Path(__file__).resolve().parents[2] / "rules"


async def test_a_discovered_device_is_contained_without_being_in_the_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone_key = base64.b64encode(os.urandom(32)).decode()
    tailnet = TailscaleContract("tskey-api-disc", "client", "secret", {"tag:quarantine"})
    tailnet.add_device("phone9", "Alice@Example.com", phone_key, "100.64.0.9")
    tailnet.add_device("laptop7", "bob@example.com", base64.b64encode(os.urandom(32)).decode(), "100.64.0.10")
    url = await tailnet.start() + "/api/v2"
    monkeypatch.setenv("RESPONDER_TEST_TS_KEY", "tskey-api-disc")
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({
        "hubs": [], "overlays": [{"name": "tailnet", "kind": "tailscale", "base_url": url,
                                  "credentials": {"token": {"env": "RESPONDER_TEST_TS_KEY"}}}],
    }))  # fmt: skip
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=tmp_path / "inventory.yaml", rules=(RULES,),
        okta_secret="okta-discovery-secret", admin_token="admin-discovery-token",
    )  # fmt: skip
    body = copy.deepcopy(payload("okta/batch.json"))
    body["data"]["events"] = body["data"]["events"][:1]  # alice reports suspicious activity
    body["data"]["events"][0]["uuid"] = str(uuid.uuid4())
    try:
        async with running(settings) as (_, base), aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/hooks/okta", json=body, headers={"Authorization": "okta-discovery-secret"}
            ) as r:
                assert r.status == 200
            async with asyncio.timeout(10):
                while True:
                    expires = datetime.fromisoformat(tailnet.devices["phone9"]["expires"].replace("Z", "+00:00"))
                    if expires.timestamp() <= time.time():
                        break
                    await asyncio.sleep(0.05)
            async with http.get(
                f"{base}/api/decisions", headers={"Authorization": "Bearer admin-discovery-token"}
            ) as r:
                (decision,) = (await r.json())["decisions"]
            assert (decision["subject"], decision["response"]) == ("user:alice@example.com", "cut-off")
            actions = decision["body"]["actions"]
            assert actions == [{"type": "remove_peer", "hub": "tailnet", "peer_key": phone_key}]
            bob = datetime.fromisoformat(tailnet.devices["laptop7"]["expires"].replace("Z", "+00:00"))
            assert bob.timestamp() > time.time()  # bob's device is untouched
    finally:
        await tailnet.stop()
