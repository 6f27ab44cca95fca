"""Approving and rejecting from the console, against the real service and an in-memory hub: the buttons
each role sees, the server's answer to each role, and the audit trail naming the operator who pressed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
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
BREACH = "security.breached_credential.detected"  # 60 points for alice (an admin): rotate-key, needs approval


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


async def _waiting_decision(base: str, journal: Journal) -> str:
    party = {"type": "User", "alternateId": "alice@example.com", "id": "00u-alice"}
    event = {
        "uuid": str(uuid.uuid4()), "published": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "eventType": BREACH, "version": "0", "severity": "WARN", "actor": party, "target": [party],
        "outcome": {"result": "SUCCESS"},
    }  # fmt: skip
    body = {"eventType": "com.okta.event_hook", "eventId": str(uuid.uuid4()), "data": {"events": [event]}}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r,
    ):
        assert r.status == 200

    async def decided() -> bool:
        return bool(await journal.decisions(None, 1))

    await eventually(decided, 5, "a decision")
    (decision,) = await journal.decisions(None, 1)
    assert (decision.response, str(decision.state)) == ("rotate-key", "awaiting_approval")
    return decision.id


async def _as(role: Role, base: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(f"{base}/console/login", data={"token": TOKEN_OF[role]}, headers={"Origin": base}) as r:
        assert r.status == 200  # followed to the timeline
    return http


async def _post(http: aiohttp.ClientSession, base: str, decision: str, verb: str) -> tuple[int, Any]:
    async with http.post(f"{base}/console/decisions/{decision}/{verb}", headers={"Origin": base}) as r:
        return r.status, await r.json()


async def test_an_approver_sees_and_uses_approve_and_the_audit_names_them(service: tuple[str, Journal]) -> None:
    base, journal = service
    decision = await _waiting_decision(base, journal)
    viewer, approver = await _as(Role.VIEWER, base), await _as(Role.APPROVER, base)
    try:
        async with viewer.get(f"{base}/console") as r:
            assert 'data-verb="approve"' not in await r.text()
        assert (await _post(viewer, base, decision, "approve"))[0] == 403
        async with approver.get(f"{base}/console") as r:
            page = await r.text()
        assert 'data-verb="approve"' in page and 'data-verb="reject"' in page
        assert 'data-verb="undo"' not in page
        assert await _post(approver, base, decision, "approve") == (202, {"id": decision, "accepted": True})
        assert str((await journal.decision(decision)).state) == "active"  # type: ignore[union-attr]
        assert [(a.actor, a.kind) for a in await journal.audit_trail(decision)] == [("april@example.com", "approve")]
        status, answer = await _post(approver, base, decision, "approve")
        assert status == 409 and "not awaiting approval" in answer["error"]
        assert (await _post(approver, base, decision, "undo"))[0] == 403
    finally:
        await viewer.close()
        await approver.close()


async def test_an_approver_rejects_a_waiting_decision_and_nothing_is_done(service: tuple[str, Journal]) -> None:
    base, journal = service
    decision = await _waiting_decision(base, journal)
    approver = await _as(Role.APPROVER, base)
    try:
        assert (await _post(approver, base, decision, "reject"))[0] == 202
        assert str((await journal.decision(decision)).state) == "rejected"  # type: ignore[union-attr]
        assert {str(i.state) for i in await journal.intents_for(decision)} == {"cancelled"}
        assert [(a.actor, a.kind) for a in await journal.audit_trail(decision)] == [("april@example.com", "rejected")]
        assert (await _post(approver, base, decision, "reject"))[0] == 409
    finally:
        await approver.close()
