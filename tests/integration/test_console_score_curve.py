"""The subject page's score over time, against the real service: the subject's journaled events replayed,
a step at each event, the decisions marked on the curve, the responses' thresholds dashed."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.config import Settings
from responder.inventory import Inventory
from responder.journal import Journal, open_journal
from responder.service.operators import Role
from tests.support.console import TOKEN_OF, operators
from tests.support.memory_hub import MemoryHub
from tests.support.probes import eventually
from tests.support.service import running

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "rules" / "tests" / "inventory.yaml"
OKTA_SECRET = "Basic Y29uc29sZTpzZWNyZXQtdmFsdWU="
# Two MFA resets (20 points each, a 24 h window, no half-life) and a breached credential (60, 7 d): the
# curve is steps only, so its points are known: before and after each event, and now.
EVENTS = [("user.mfa.factor.reset_all", 300), ("user.mfa.factor.reset_all", 200),
          ("security.breached_credential.detected", 100)]  # fmt: skip


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[str, Journal]]:
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=INVENTORY, rules=(ROOT / "rules",),
        okta_secret=OKTA_SECRET,
    )  # fmt: skip
    hub = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    async with running(settings, hubs={"hub1": hub}, operators=operators()) as (_, base):
        journal = await open_journal(settings.journal)
        try:
            yield base, journal
        finally:
            await journal.close()


async def _send_okta(base: str, event_type: str, ago_s: int, **fields: Any) -> None:
    party = {"type": "User", "alternateId": "alice@example.com", "id": "00u-alice"}
    published = (datetime.now(UTC) - timedelta(seconds=ago_s)).isoformat().replace("+00:00", "Z")
    event = {
        "uuid": str(uuid.uuid4()), "published": published, "eventType": event_type, "version": "0",
        "severity": "WARN", "actor": party, "target": [party], "outcome": {"result": "SUCCESS"},
    } | fields  # fmt: skip
    body = {"eventType": "com.okta.event_hook", "eventId": str(uuid.uuid4()), "data": {"events": [event]}}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r,
    ):
        assert r.status == 200


async def _page(base: str, path: str) -> str:
    headers = {"Authorization": f"Bearer {TOKEN_OF[Role.VIEWER]}"}
    async with aiohttp.ClientSession() as http, http.get(f"{base}{path}", headers=headers) as r:
        assert r.status == 200
        return await r.text()


async def test_the_subject_page_plots_the_score_replayed_from_its_events(service: tuple[str, Journal]) -> None:
    base, journal = service
    for event_type, ago_s in EVENTS:
        await _send_okta(base, event_type, ago_s)

    async def processed() -> bool:
        return len(await journal.events_about(["alice@example.com"])) == len(EVENTS)

    await eventually(processed, 5, "alice's events processed")
    decisions = [d for d in await journal.decisions(None, 10) if d.subject == "user:alice@example.com"]
    assert decisions

    page = await _page(base, "/console/subjects/user:alice@example.com")

    (line,) = re.findall(r'<polyline class="score" fill="none" points="([^"]+)"/>', page)
    assert len(line.split()) == 2 * len(EVENTS) + 1  # before and after each event, and now
    assert page.count('<circle class="point"') == len(EVENTS)
    assert page.count('<line class="decision"') == len(decisions)
    labels = re.findall(r'<text class="decision-label"[^>]*>([^<]+)</text>', page)
    assert sorted(labels) == sorted(d.response for d in decisions)
    for d in decisions:
        assert f"decided {d.response}" in page  # said to a screen reader too
    assert "cut-off 70" in page  # a response's threshold, labelled
    assert "Replayed from the subject&#x27;s recorded events" in page


async def test_a_subject_without_events_has_no_scores_recorded(service: tuple[str, Journal]) -> None:
    base, _ = service
    page = await _page(base, "/console/subjects/user:nobody@example.com")
    assert "no scores recorded" in page and "<polyline" not in page


async def test_an_event_naming_only_a_persons_tunnel_address_is_on_their_curve(service: tuple[str, Journal]) -> None:
    base, journal = service
    # ThreatInsight names the address it saw (alice's peer), not a user: filed under the address.
    address = {"type": "IP address", "alternateId": "unknown", "id": "10.100.0.10", "displayName": "10.100.0.10"}
    await _send_okta(
        base, "security.threat.detected", 60, actor=address, target=[],
        client={"ipAddress": "10.100.0.10"}, outcome={"result": "DENY", "reason": "Password Spray"},
    )  # fmt: skip

    async def processed() -> bool:
        return len(await journal.events_about(["10.100.0.10"])) == 1

    await eventually(processed, 5, "the address's event processed")

    page = await _page(base, "/console/subjects/user:alice@example.com")

    assert page.count('<circle class="point"') == 1
    assert "no scores recorded" not in page
