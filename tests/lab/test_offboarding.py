"""Offboarding against the lab, from a pull source's side: canonical Entra user changes (what the Graph
subscription source emits) handed to the journal as a source does, then packets. A disabled user's devices
are cut off on the hub; the user enabled again, the policy lifts it and they reach their servers again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from responder.config import Settings
from responder.core.events import Event, Severity, Source, Subjects
from responder.ingest.handoff import JournalHandoff, Waking
from responder.journal import DeliveryRecord, open_journal
from responder.lab import Lab
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
RULES = Path(__file__).resolve().parents[2] / "rules"
ADMIN = "admin-offboarding-token-value"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}
INSTANCE = "test"


def _entra(kind: str, severity: Severity) -> Event:
    """A user change as the Graph source emits it (common shape: source entra, the UPN as the subject)."""
    event_id = str(uuid.uuid4())
    return Event(
        id=event_id, source=Source.ENTRA, product="entra-graph-user", type=kind, time=datetime.now(UTC),
        subjects=Subjects(users=("alice@example.com",)), severity=severity, dedup_key=f"entra-user:{event_id}",
    )  # fmt: skip


@pytest.mark.timeout(60)
async def test_an_entra_user_disabled_cuts_off_and_enabled_gives_back(lab: Lab, tmp_path: Path) -> None:
    assert await tcp(lab, "admin1", "10.100.0.20") == "open"
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=lab.inventory_path, rules=(RULES,),
        okta_secret="okta-offboarding-secret-value", admin_token=ADMIN, reconcile_interval_s=0.5,
    )  # fmt: skip
    async with (
        running(settings, instance=INSTANCE) as (service, base),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
    ):
        journal = await open_journal(settings.journal)
        try:
            source = Waking(JournalHandoff(journal, INSTANCE), service.wake)

            async def hand_off(event: Event) -> None:
                delivery = DeliveryRecord(str(uuid.uuid4()), "entra", datetime.now(UTC).isoformat())
                assert (await source.accept(delivery, [event])).new == 1

            async def reaches_app1() -> bool:
                return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

            async def cut_off() -> bool:
                return not await reaches_app1()

            await hand_off(_entra("user.disabled", Severity.HIGH))
            await eventually(cut_off, 10, "admin1 cut off from app1 after alice was disabled in Entra")
            async with http.get(f"{base}/api/decisions", headers=HEADERS) as r:
                (decision,) = (await r.json())["decisions"]
            assert (decision["response"], decision["state"], decision["expires_at"]) == ("offboard", "active", None)

            enabled = _entra("user.enabled", Severity.INFO)
            await hand_off(enabled)
            await eventually(reaches_app1, 10, "admin1 reaches app1 again after alice was enabled in Entra")
            async with http.get(f"{base}/api/decisions/{decision['id']}", headers=HEADERS) as r:
                shown = await r.json()
            assert shown["state"] == "undone"
            assert [a["actor"] for a in shown["audit"]] == [f"policy:entra-user-reenabled (event {enabled.id})"]
        finally:
            await journal.close()
