"""Memory and journal stay bounded under a flood of distinct names: overlong identifiers are refused per
event, the engine forgets subjects whose signals are past and stops at its limit, and retention prunes
the journal (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.config import Limits, Listen, Retention, Settings
from responder.core.actions import ActionType
from responder.core.engine import Engine
from responder.core.events import Event, Severity, Source, Subjects
from responder.core.identity import IdentityMap
from responder.core.rules import ActionTemplate, ResponseRule, RuleSet, SignalRule
from responder.inventory import HubSpec, Inventory, PeerSpec, SshEndpoint
from responder.journal import (
    DecisionRecord,
    DecisionState,
    DeliveryRecord,
    EventOutcome,
    EventRecord,
    IntentKind,
    IntentRecord,
    IntentState,
    Journal,
    open_journal,
)
from responder.policy import load_rules
from tests.support.journal import accept
from tests.support.service import no_hubs, running

ROOT = Path(__file__).resolve().parents[2]
OKTA_SECRET = "Basic b2t0YTpzZWNyZXQtdmFsdWU="
OKTA_HEADERS = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
THREAT = "security.threat.detected"  # 45 points for 12 hours in the shipped rules


def _okta_event(user: str, published: datetime, severity: str = "INFO") -> dict[str, Any]:
    return {
        "uuid": str(uuid.uuid4()),
        "published": published.isoformat().replace("+00:00", "Z"),
        "eventType": THREAT,
        "severity": severity,
        "actor": {"type": "User", "alternateId": user},
        "outcome": {"reason": "flood"},
    }


def _delivery(events: list[dict[str, Any]]) -> bytes:
    envelope = {"eventType": "com.okta.event_hook", "eventId": str(uuid.uuid4()), "data": {"events": events}}
    return json.dumps(envelope).encode()


async def _rows(journal: Journal) -> dict[str, int]:
    out = {}
    async with journal.read() as tx:
        for table in ("deliveries", "events", "decisions", "intents", "audit"):
            out[table] = int((await tx.fetch(f"SELECT COUNT(*) AS n FROM {table}"))[0]["n"])  # noqa: S608 - fixed names
    return out


async def _until(check: Callable[[], Any], timeout: float = 120.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.2)


class _Clock:
    """The service's wall clock, which the test moves forward."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def test_flood_of_distinct_names_leaves_memory_and_journal_bounded(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    url = f"sqlite:///{tmp_path}/journal.db"
    settings = Settings(
        journal=url, okta_secret=OKTA_SECRET, inventory=no_hubs(tmp_path), rules=(ROOT / "rules",),
        limits=Limits(max_subjects=20_000), retention=Retention(interval_s=0.5),
        listen=Listen(max_body_bytes=2 << 20),  # a thousand events naming 850-character users
    )  # fmt: skip
    clock = _Clock()
    old = datetime.now(UTC) - timedelta(days=2)
    async with running(settings, clock=clock) as (service, base):
        metric = service.metrics.registry.get_sample_value
        journal = await open_journal(url)
        try:
            # 1. 50 authenticated deliveries naming 50,000 distinct 850-character users, 10 genuine ones
            # in each: the overlong events are refused one by one, the genuine ones kept.
            long_name = "x" * 838 + "@example.com"
            for d in range(50):
                events = [_okta_event(f"{i:06d}{d:02d}{long_name}", old) for i in range(990)]
                events += [_okta_event(f"genuine{d}-{i}@example.com", old) for i in range(10)]
                async with http.post(f"{base}/hooks/okta", data=_delivery(events), headers=OKTA_HEADERS) as r:
                    assert r.status == 200
            await _until(lambda: _processed(journal, 500))
            assert (await _rows(journal))["events"] == 500
            assert metric("responder_tracked_subjects") == 500
            assert metric("responder_deliveries_total", {"source": "okta", "outcome": "invalid_event"}) == 49_500

            # 2. 50,000 distinct genuine names from two days ago: the engine stops at its limit (20,000;
            # the last tenth only for high severity, which these are not) and counts what it refused.
            for d in range(50):
                events = [_okta_event(f"flood{d}-{i}@example.com", old + timedelta(seconds=i)) for i in range(1000)]
                async with http.post(f"{base}/hooks/okta", data=_delivery(events), headers=OKTA_HEADERS) as r:
                    assert r.status == 200
            await _until(lambda: _processed(journal, 50_500))
            assert metric("responder_tracked_subjects") == 18_000
            assert metric("responder_subjects_refused_total") == 50_500 - 18_000

            # 3. One event now: every signal of the flood (12-hour window) and of step 1 is past, and the
            # engine forgets those subjects; a new one is tracked again.
            now_event = _okta_event("late@example.com", datetime.now(UTC), "WARN")
            async with http.post(f"{base}/hooks/okta", data=_delivery([now_event]), headers=OKTA_HEADERS) as r:
                assert r.status == 200
            await _until(lambda: _processed(journal, 50_501))
            assert metric("responder_tracked_subjects") == 1

            # 4. Ten days later (the longest rule window or TTL plus the one-day margin is past), the
            # service's retention pass deletes the events and the deliveries they came in.
            assert (await _rows(journal))["deliveries"] == 101
            clock.ahead = timedelta(days=10)
            await _until(lambda: _empty(journal))
            assert await _rows(journal) == {"deliveries": 0, "events": 0, "decisions": 0, "intents": 0, "audit": 0}

            async def counted() -> bool:  # once the pass that deleted them has finished
                return metric("responder_journal_pruned_rows_total", {"table": "deliveries"}) == 101

            await _until(counted)
            assert metric("responder_journal_pruned_rows_total", {"table": "events"}) == 50_501
        finally:
            await journal.close()


async def _processed(journal: Journal, n: int) -> bool:
    counts = await journal.counts()
    return counts.get("events.processed", 0) >= n and counts.get("events.pending", 0) == 0


async def _empty(journal: Journal) -> bool:
    rows = await _rows(journal)
    return rows["events"] == 0 and rows["deliveries"] == 0


# --- the engine on its own --------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, tzinfo=UTC)
BREACHED = "security.breached_credential.detected"


def _event(n: int, user: str, at: datetime, type_: str = THREAT, severity: Severity = Severity.INFO) -> Event:
    return Event(
        id=f"e{n}", source=Source.OKTA, type=type_, time=at, subjects=Subjects(users=(user,)), severity=severity,
        attributes={"outcome": {"reason": "x"}}, dedup_key=f"e{n}",
    )  # fmt: skip


def _inventory(owners: list[str]) -> Inventory:
    hub = HubSpec(
        name="hub1",
        ssh=SshEndpoint(host="198.18.1.1", user="root", host_key="ssh-ed25519 AAAA", client_key=Path("/k")),
        tunnel_network="10.100.0.0/16",  # type: ignore[arg-type]
        address="10.100.0.1",  # type: ignore[arg-type]
    )
    peers = [
        PeerSpec(
            name=f"dev{i}",
            hub="hub1",
            tunnel_ip=f"10.100.1.{i + 2}",  # type: ignore[arg-type]
            public_key=base64.b64encode(hashlib.sha256(owner.encode()).digest()).decode(),  # type: ignore[arg-type]
            sets=("app_servers",),
            owner=owner,
        )
        for i, owner in enumerate(owners)
    ]
    return Inventory(hubs=(hub,), peers=tuple(peers))


def _held_rules() -> RuleSet:
    """A low signal anyone may get, a strong one, and a response without an end (held until undone)."""
    return RuleSet(
        signals=(
            SignalRule(id="noise", points=10, window_s=3600, cap=50, reason="noise", source=Source.OKTA,
                       types=frozenset({THREAT})),
            SignalRule(id="breach", points=50, window_s=3600, cap=50, reason="breach", source=Source.OKTA,
                       types=frozenset({BREACHED})),
        ),
        responses=(ResponseRule(id="hold", level=10, actions=(ActionTemplate(ActionType.QUARANTINE),), min_score=40),),
    )  # fmt: skip


def test_engine_forgets_a_subject_once_its_signals_are_past_but_not_one_under_a_response() -> None:
    engine = Engine(_held_rules(), IdentityMap(_inventory(["held@example.com"])))
    assert engine.process(_event(0, "held@example.com", T0, type_=BREACHED)).decisions
    for i in range(5000):
        engine.process(_event(i + 1, f"p{i}@example.com", T0 + timedelta(seconds=i / 2)))
    assert engine.tracked == 5001
    # Each one is forgotten within a minute after its hour has passed, not earlier: at T0 + 1 h + 1250 s,
    # p0..p2500 are past, and p0..p2399 (whose hour ended in a minute now over) are forgotten.
    engine.process(_event(10_000, "q@example.com", T0 + timedelta(seconds=3600 + 1250), type_="user.session.start"))
    assert engine.tracked == 5001 - 2400
    engine.process(_event(10_001, "q@example.com", T0 + timedelta(hours=3), type_="user.session.start"))
    assert engine.tracked == 1  # the subject under the response, whose signals are past too
    assert engine.state("user:held@example.com").active_response == "hold"
    # Once the response ends, the subject goes too, within a minute.
    engine.release("user:held@example.com", "hold")
    engine.process(_event(10_002, "q@example.com", T0 + timedelta(hours=3, seconds=59), type_="user.session.start"))
    assert engine.tracked == 1
    engine.process(_event(10_003, "q@example.com", T0 + timedelta(hours=3, seconds=60), type_="user.session.start"))
    assert engine.tracked == 0


def test_forgetting_changes_no_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same stream, with and without forgetting: the same decisions (a forgotten subject is one that
    would score 0 with no response in force, exactly as a new one)."""
    rules = load_rules([ROOT / "rules"])
    owners = [f"p{i}@example.com" for i in range(40)]
    types = [THREAT, "user.account.report_suspicious_activity_by_enduser", "user.mfa.factor.reset_all", BREACHED]
    # Bursts a week and a half apart (every window ends between them), and people named only once.
    stream = [
        _event(i, owners[i * 7 % 40] if i % 5 else f"once{i}@example.com",
               T0 + timedelta(minutes=17 * i, days=10 * (i // 500)), type_=types[i % 4])
        for i in range(3000)
    ]  # fmt: skip
    forgetting = Engine(rules, IdentityMap(_inventory(owners)))
    seen = [[d.to_dict() for d in forgetting.process(e).decisions] for e in stream]
    monkeypatch.setattr(Engine, "_forget_expired", lambda self, now: None)
    keeping = Engine(rules, IdentityMap(_inventory(owners)))
    assert [[d.to_dict() for d in keeping.process(e).decisions] for e in stream] == seen
    assert sum(map(len, seen)) > 100  # the stream decides, over and over
    assert forgetting.tracked < keeping.tracked


def test_engine_at_its_limit_refuses_new_subjects_and_keeps_the_tracked_ones() -> None:
    engine = Engine(_held_rules(), IdentityMap(None), max_subjects=1000)
    refused = 0
    for i in range(2000):
        refused += len(engine.process(_event(i, f"p{i}@example.com", T0)).refused)
    assert (engine.tracked, refused, engine.full) == (900, 1100, True)
    # The last tenth is for high and critical events about new subjects, and stops at the limit.
    for i in range(200):
        refused += len(engine.process(_event(5000 + i, f"h{i}@example.com", T0, severity=Severity.HIGH)).refused)
    assert (engine.tracked, refused) == (1000, 1200)
    # A tracked subject still accrues risk at the limit; an untracked one does not.
    assert engine.process(_event(9000, "p0@example.com", T0)).explanations[0].score == 20
    assert engine.process(_event(9001, "p1999@example.com", T0)).refused == ("user:p1999@example.com",)
    # When their signals are past, the subjects are forgotten and new ones are taken again.
    engine.process(_event(9002, "new@example.com", T0 + timedelta(hours=2)))
    assert (engine.tracked, engine.full) == (1, False)


# --- journal retention, on both engines ----------------------------------------------------------------


def _at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat()


async def _decision(journal: Journal, did: str, state: DecisionState, created: float, intent: IntentState) -> None:
    record = DecisionRecord(
        id=did, subject="user:a@example.com", response="cut-off", level=2, state=state, created_at=_at(created),
        expires_at=None, body="{}", trace={},
    )  # fmt: skip
    await journal.record_manual(
        record, [IntentRecord(f"{did}-i", did, 0, IntentKind.APPLY, "{}", intent, False, _at(created), {})]
    )


async def test_retention_prunes_old_events_deliveries_decisions_and_audit_and_keeps_what_is_live(
    journal: Journal,
) -> None:
    # 300 deliveries of two events each on day 0, 50 on day 9; 20 of day 0 still pending.
    for n in range(350):
        day = 0 if n < 300 else 9
        delivery = DeliveryRecord(f"d{n}", "okta", _at(day), {}, {}, b"{}")
        events = [EventRecord(f"k{n}-{j}", "user:a", _at(day), "{}") for j in range(2)]
        await accept(journal, delivery, events, "me")
    pending = await journal.pending_events("me", limit=10_000)
    by_day = {0: [s.seq for s in pending[:600]], 9: [s.seq for s in pending[600:]]}
    await journal.record_outcomes([EventOutcome(s) for s in by_day[0][:-20]], _at(0))
    await journal.record_outcomes([EventOutcome(s) for s in by_day[9]], _at(9))
    # Decisions from a year and a half ago in every state, and one from day 9.
    old = -500
    await _decision(journal, "expired", DecisionState.EXPIRED, old, IntentState.DONE)
    await _decision(journal, "undone", DecisionState.UNDONE, old, IntentState.CANCELLED)
    await _decision(journal, "dry", DecisionState.DRY_RUN, old, IntentState.DONE)
    await _decision(journal, "active", DecisionState.ACTIVE, old, IntentState.DONE)
    await _decision(journal, "replaced", DecisionState.REPLACED, old, IntentState.DONE)
    await _decision(journal, "undo-failed", DecisionState.UNDONE, old, IntentState.FAILED)
    await _decision(journal, "recent", DecisionState.EXPIRED, 9, IntentState.DONE)
    for n in range(30):
        await journal.audit(_at(old if n < 25 else 9), "op", "undo", f"r{n}", {})
    # Used approval links: one that expired long ago is forgotten, one still valid is kept (or it could be reused).
    assert await journal.use_once("link:expired", _at(old), keep_until=_at(old + 1))
    assert await journal.use_once("link:valid", _at(9), keep_until=_at(10))
    before = await _rows(journal)
    assert before == {"deliveries": 350, "events": 700, "decisions": 7, "intents": 7, "audit": 30}

    pruned = await journal.prune(events_before=_at(5), decisions_before=_at(-400), batch=64)

    assert pruned == {
        "events": 580,
        "deliveries": 290,
        "decisions": 3,
        "intents": 3,
        "audit": 25,
        "notifications": 0,
        "used_once": 1,
    }
    assert not await journal.use_once("link:valid", _at(9), keep_until=_at(10))
    assert await _rows(journal) == {"deliveries": 60, "events": 120, "decisions": 4, "intents": 4, "audit": 5}
    counts = await journal.counts()
    assert counts["events.pending"] == 20  # never pruned, however old
    kept = {d.id for d in await journal.decisions(None, 100)}
    assert kept == {"active", "replaced", "undo-failed", "recent"}
    # A second pass finds nothing more.
    assert set((await journal.prune(events_before=_at(5), decisions_before=_at(-400))).values()) == {0}
