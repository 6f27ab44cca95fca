"""Urgent events (webhooks, high severity) are decided ahead of a SIEM backlog, each subject's still in order;
against real SQLite and real PostgreSQL, through the real hand-off and pipeline."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from responder.core.decisions import Outcome
from responder.core.engine import Engine
from responder.core.events import Event, Severity, Source, Subjects
from responder.core.identity import IdentityMap
from responder.core.rules import RuleSet
from responder.executor import Executor
from responder.ingest.handoff import JournalHandoff, lane_of
from responder.inventory import Inventory
from responder.journal import DecisionState, DeliveryRecord, EventRecord, Journal, Lane, open_journal
from responder.policy import load_rules
from responder.service.guard import BlastRadius
from responder.service.pipeline import Pipeline
from responder.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = Inventory.load(ROOT / "rules" / "tests" / "inventory.yaml")
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
OWNER = "test"
BACKLOG = 3000
POLICY = """
signals:
  - {id: gone, source: okta, type: user.lifecycle.deactivate, points: 100, window: 7d, reason: gone}
responses:
  - {id: offboard, level: 40, any_signals: [gone], actions: [kill_flows, remove_peer]}
"""


class _Watched(Engine):
    """The engine, noting the order it is given events in, and stopping the pipeline after a given one
    (after its round: the pipeline checks `stop` between rounds), optionally signalling `urgent` then too."""

    def __init__(
        self, rules: RuleSet, stop: asyncio.Event, stop_after: str, urgent: asyncio.Event | None = None
    ) -> None:
        super().__init__(rules, IdentityMap(INVENTORY))
        self.seen: list[str] = []
        self._stop, self._stop_after, self._urgent = stop, stop_after, urgent

    def process(self, event: Event) -> Outcome:
        self.seen.append(event.id)
        if event.id == self._stop_after:
            self._stop.set()
            if self._urgent is not None:
                self._urgent.set()
        return super().process(event)


def _alert(n: int, user: str) -> Event:
    return Event(
        id=f"siem-{n}", source=Source.SIEM, type="alert.benign", time=NOW + timedelta(milliseconds=n),
        severity=Severity.LOW, subjects=Subjects(users=(user,)), dedup_key=f"siem:{n}",
    )  # fmt: skip


def _cut_off(user: str) -> Event:
    return Event(
        id="okta-1", source=Source.OKTA, type="user.lifecycle.deactivate", time=NOW + timedelta(seconds=10),
        subjects=Subjects(users=(user,)), dedup_key="okta:1",
    )  # fmt: skip


async def _fill(journal: Journal, first: list[Event]) -> None:
    """The backlog through the real hand-off (as the Kafka consumer stores a batch), then the Okta delivery."""
    handoff = JournalHandoff(journal, OWNER)
    alerts = [*first, *(_alert(n, f"user{n % 50}@example.com") for n in range(len(first), BACKLOG))]
    await handoff.accept_batch([(DeliveryRecord("kafka:0", "siem", NOW.isoformat()), alerts)])
    await handoff.accept(DeliveryRecord("okta:d1", "okta", NOW.isoformat()), [_cut_off("bob@example.com")])


async def _run_until(
    journal: Journal, engine: _Watched, stop: asyncio.Event, urgent: asyncio.Event | None = None
) -> None:
    radius = BlastRadius(1000, 1000, lambda: 0.0)
    executor = Executor(journal, {}, lambda: NOW)
    pipeline = Pipeline(
        journal=journal, engine=engine, executor=executor, radius=radius, clock=lambda: NOW, owner=OWNER,
        metrics=Metrics(), dry_run=True, urgent=urgent,
    )  # fmt: skip
    await asyncio.wait_for(pipeline.run(stop), 60)


def _rules(tmp_path: Path) -> RuleSet:
    (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
    return load_rules([tmp_path])


async def test_an_okta_cut_off_is_decided_before_a_siem_backlog(journal: Journal, tmp_path: Path) -> None:
    await _fill(journal, [])
    stop = asyncio.Event()
    engine = _Watched(_rules(tmp_path), stop, stop_after="okta-1")
    await _run_until(journal, engine, stop)
    assert engine.seen == ["okta-1"]  # the first event decided, though it arrived last
    (decision,) = await journal.decisions(DecisionState.DRY_RUN)
    assert decision.subject == "user:bob@example.com"
    assert len(await journal.pending_events(OWNER, limit=10_000)) == BACKLOG


async def test_a_subjects_earlier_bulk_event_is_decided_before_its_urgent_one(journal: Journal, tmp_path: Path) -> None:
    await _fill(journal, [_alert(0, "bob@example.com")])
    stop = asyncio.Event()
    engine = _Watched(_rules(tmp_path), stop, stop_after="okta-1")
    await _run_until(journal, engine, stop)
    assert engine.seen == ["siem-0", "okta-1"]  # bob's alert first, then his cut-off; the backlog after
    assert len(await journal.decisions(DecisionState.DRY_RUN)) == 1
    assert len(await journal.pending_events(OWNER, limit=10_000)) == BACKLOG - 1


async def test_a_bulk_batch_stops_early_when_an_urgent_event_is_stored(journal: Journal, tmp_path: Path) -> None:
    await _fill(journal, [])
    stop, urgent = asyncio.Event(), asyncio.Event()
    # The hand-off signals an urgent event while the first bulk batch (500) is decided, at its 101st event.
    engine = _Watched(_rules(tmp_path), stop, stop_after="siem-100", urgent=urgent)
    await _run_until(journal, engine, stop, urgent)
    assert engine.seen[0] == "okta-1"  # the round before: the Okta event was urgent from the start
    # The batch stopped at its next turn (every 50 events): what was decided is written, the rest pending.
    assert engine.seen[1:] == [f"siem-{n}" for n in range(150)]
    assert len(await journal.pending_events(OWNER, limit=10_000)) == BACKLOG - 150


async def test_with_more_earlier_events_than_the_limit_the_cut_keeps_the_order(journal: Journal) -> None:
    handoff = JournalHandoff(journal, OWNER)
    bob = [_alert(n, "bob@example.com") for n in range(3)]
    await handoff.accept_batch([(DeliveryRecord("kafka:0", "siem", NOW.isoformat()), bob)])
    await handoff.accept(DeliveryRecord("okta:d1", "okta", NOW.isoformat()), [_cut_off("bob@example.com")])
    taken = await journal.urgent_events(OWNER, limit=2)
    assert [s.dedup_key for s in taken] == ["siem:0", "siem:1"]  # not the cut-off: an alert of bob's is left
    assert [s.dedup_key for s in await journal.urgent_events(OWNER, limit=5)] == [
        "siem:0", "siem:1", "siem:2", "okta:1",
    ]  # fmt: skip


def test_webhook_sources_and_high_severity_are_urgent() -> None:
    assert lane_of(_cut_off("bob@example.com")) is Lane.URGENT
    assert lane_of(_alert(1, "bob@example.com")) is Lane.BULK
    assert lane_of(_alert(1, "bob@example.com").model_copy(update={"severity": Severity.HIGH})) is Lane.URGENT


async def test_a_journal_written_before_lanes_opens_with_its_pending_events_bulk(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = await open_journal(f"sqlite:///{path}")
    try:
        handoff = JournalHandoff(journal, OWNER)
        await handoff.accept(DeliveryRecord("okta:d1", "okta", NOW.isoformat()), [_cut_off("bob@example.com")])
    finally:
        await journal.close()
    with sqlite3.connect(path) as db:  # as the journal was before: no lane, nor its indexes
        db.execute("DROP INDEX events_urgent")
        db.execute("DROP INDEX events_pending_subject")
        db.execute("ALTER TABLE events DROP COLUMN lane")
    db.close()
    journal = await open_journal(f"sqlite:///{path}")
    try:
        (pending,) = await journal.pending_events(OWNER)
        assert pending.lane is Lane.BULK
        assert await journal.urgent_events(OWNER) == []
        urgent = EventRecord("k2", "bob@example.com", NOW.isoformat(), "{}", Lane.URGENT)
        await journal.accept_batch([(DeliveryRecord("d2", "okta", NOW.isoformat()), [urgent])], OWNER)
        assert [s.dedup_key for s in await journal.urgent_events(OWNER)] == ["okta:1", "k2"]
    finally:
        await journal.close()


async def test_looking_for_urgent_events_does_not_read_the_bulk_backlog(tmp_path: Path) -> None:
    """Every round of the pipeline asks for urgent events first: with a SIEM backlog pending, SQLite must
    find them through their own index, not by reading every pending row (its plan, as the journal asks)."""
    path = tmp_path / "journal.db"
    journal = await open_journal(f"sqlite:///{path}")
    asked: list[str] = []
    try:
        await _fill(journal, [])
        journal._reader._db.set_trace_callback(asked.append)  # type: ignore[attr-defined]  # the statements sent
        assert [s.dedup_key for s in await journal.urgent_events(OWNER)] == ["okta:1"]  # bob has no backlog
    finally:
        await journal.close()
    (urgent,) = [q for q in asked if "lane = 0" in q]
    (earlier,) = [q for q in asked if "lane <> 0" in q]
    with sqlite3.connect(path) as db:
        plans = [" ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {q}")) for q in (urgent, earlier)]
    db.close()
    assert "USING INDEX events_urgent" in plans[0], plans[0]
    assert "USING INDEX events_pending_subject" in plans[1], plans[1]
