"""One event dated in the future must not blind risk scoring for everyone else: event times are bounded
by their receipt (`max_clock_skew_s`), at intake and when the engine is rebuilt. Against the real service
over HTTP with a real SQLite journal; the Okta hook and a signed Shared Signals SET."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.config import Settings, Ssf
from responder.core.engine import Engine
from responder.core.events import Event, Source, Subjects, bounded_by_receipt
from responder.core.identity import IdentityMap
from responder.journal import DeliveryRecord, EventOutcome, EventRecord, open_journal
from responder.policy import load_rules
from tests.support.payloads import Transmitter, payload
from tests.support.service import event_bodies, no_hubs, running

OKTA_SECRET = "Basic b2t0YTpzZWNyZXQtdmFsdWU="
OKTA_HEADERS = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
ISSUER, AUDIENCE = "https://idp.partner.example", "https://soar.acme.example/ssf/push"
SET_HEADERS = {"Content-Type": "application/secevent+jwt", "Authorization": "Bearer ssf-push-token"}
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
REPORT = "user.account.report_suspicious_activity_by_enduser"
FAR_FUTURE = "9999-12-31T23:59:59Z"


def _report(user: str, published: str) -> dict[str, Any]:
    party = {"id": "00u1", "type": "User", "alternateId": user}
    return {
        "uuid": uuid.uuid4().hex, "published": published, "severity": "WARN", "eventType": REPORT,
        "actor": party, "target": [party],
    }  # fmt: skip


def _delivery(*events: dict[str, Any]) -> bytes:
    return json.dumps({"eventId": uuid.uuid4().hex, "data": {"events": list(events)}}).encode()


def _settings(tmp_path: Path, transmitter: Transmitter) -> Settings:
    (tmp_path / "jwks.json").write_text(json.dumps(transmitter.jwks()))
    return Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", okta_secret=OKTA_SECRET, admin_token="admin-token-for-tests",
        ssf=Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp_path / "jwks.json"),
        ssf_authorization="Bearer ssf-push-token", inventory=no_hubs(tmp_path),
    )  # fmt: skip


async def _score(http: aiohttp.ClientSession, base: str, user: str) -> float:
    async with http.get(f"{base}/api/subjects/user:{user}", headers=ADMIN) as r:
        assert r.status == 200
        return float((await r.json())["score"])


async def _alice_reports(http: aiohttp.ClientSession, base: str) -> None:
    """A real report, now; the pipeline decides it a moment later."""
    now = datetime.now(UTC).isoformat()
    async with http.post(
        f"{base}/hooks/okta", data=_delivery(_report("alice@example.com", now)), headers=OKTA_HEADERS
    ) as r:
        assert r.status == 200


async def _scored(http: aiohttp.ClientSession, base: str, user: str, points: float) -> float:
    """The subject's score once the pipeline has decided on what was sent (or after 5 s, what it is)."""
    for _ in range(100):
        if (score := await _score(http, base, user)) >= points:
            return score
        await asyncio.sleep(0.05)
    return await _score(http, base, user)


@pytest.mark.parametrize("via", ["okta", "ssf"])
async def test_a_future_event_does_not_blind_scoring_for_anyone_else(tmp_path: Path, via: str) -> None:
    transmitter = Transmitter()
    settings = _settings(tmp_path, transmitter)
    async with running(settings) as (_, base), aiohttp.ClientSession() as http:
        if via == "okta":
            body = _delivery(_report("mallory@example.com", FAR_FUTURE))
            async with http.post(f"{base}/hooks/okta", data=body, headers=OKTA_HEADERS) as r:
                assert r.status == 200
        else:
            claims = payload("ssf/credential_compromise.json")
            claims["jti"], claims["sub_id"]["email"] = uuid.uuid4().hex, "mallory@example.com"
            event = claims["events"]["https://schemas.openid.net/secevent/risc/event-type/credential-compromise"]
            event["event_timestamp"] = 99_999_999_999  # in seconds, the latest the SET reader takes: year 5138
            async with http.post(f"{base}/hooks/ssf", data=transmitter.sign(claims), headers=SET_HEADERS) as r:
                assert r.status == 202
        await _alice_reports(http, base)
        assert await _scored(http, base, "alice@example.com", 80) == 80
    # Started again: the engine is rebuilt from the journal, the future event with it.
    async with running(settings) as (_, base), aiohttp.ClientSession() as http:
        assert await _score(http, base, "alice@example.com") == 80
    journal = await open_journal(settings.journal)
    try:
        stored = {b["subjects"]["users"][0]: b for b in await event_bodies(journal)}
    finally:
        await journal.close()
    future = stored["mallory@example.com"]
    assert datetime.fromisoformat(future["claimed_time"]).year > 5000, "the claim is kept, and flagged"
    assert abs(datetime.fromisoformat(future["time"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert "claimed_time" not in stored["alice@example.com"]


async def test_a_future_event_in_an_older_journal_does_not_blind_the_rebuilt_engine(tmp_path: Path) -> None:
    settings = _settings(tmp_path, Transmitter())
    journal = await open_journal(settings.journal)
    try:  # as a journal written before times were bounded holds it
        now = datetime.now(UTC).isoformat()
        body = json.dumps({
            "id": "old", "source": "okta", "product": "okta", "type": REPORT, "time": FAR_FUTURE,
            "subjects": {"users": ["mallory@example.com"]}, "severity": 2, "dedup_key": "okta:old",
        })  # fmt: skip
        (accepted,) = await journal.accept_batch(
            [(DeliveryRecord("okta:old", "okta", now), [EventRecord("okta:old", "user:mallory", now, body)])], "test"
        )
        await journal.record_outcomes([EventOutcome(s) for s in accepted.seqs if s is not None], now)
    finally:
        await journal.close()
    async with running(settings) as (_, base), aiohttp.ClientSession() as http:
        await _alice_reports(http, base)
        assert await _scored(http, base, "alice@example.com", 80) == 80


def test_a_bounded_event_says_so_in_its_explanation() -> None:
    received = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    claimed = Event(
        id="e1", source=Source.OKTA, type=REPORT, time=datetime(9999, 12, 31, tzinfo=UTC),
        subjects=Subjects(users=("alice@example.com",)), dedup_key="okta:e1",
    )  # fmt: skip
    bounded = bounded_by_receipt(claimed, received, timedelta(minutes=5))
    assert (bounded.time, bounded.claimed_time) == (received, claimed.time)
    assert Event.model_validate_json(bounded.canonical_json) == bounded
    within = Event(id="e2", source=Source.OKTA, type=REPORT, time=received + timedelta(minutes=4), dedup_key="k2")
    assert bounded_by_receipt(within, received, timedelta(minutes=5)) is within
    outcome = Engine(load_rules([Path("rules")]), IdentityMap(None)).process(bounded)
    (explanation,) = outcome.explanations
    assert any("claimed 9999-12-31" in note and "ahead of its receipt" in note for note in explanation.notes)
