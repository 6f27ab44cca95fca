"""The journal's guarantees, against real SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from responder.journal import (
    DecisionRecord,
    DecisionState,
    DeliveryRecord,
    EventOutcome,
    EventRecord,
    FinishedIntent,
    IntentKind,
    IntentRecord,
    IntentState,
    Journal,
    Lane,
    open_journal,
)
from tests.support.journal import accept, finish_intent, record_outcome

T0 = "2026-03-02T10:15:29.000000Z"


def _delivery(n: int) -> DeliveryRecord:
    return DeliveryRecord(id=f"d{n}", source="okta", received_at=T0, trace={"traceparent": f"00-{n:032x}-{n:016x}-01"})


def _event(key: str, subject: str = "user:alice@example.com") -> EventRecord:
    return EventRecord(dedup_key=key, subject=subject, occurred_at=T0, body=json.dumps({"key": key}))


def _decision(did: str, state: DecisionState = DecisionState.ACTIVE) -> DecisionRecord:
    return DecisionRecord(
        id=did,
        subject="user:alice@example.com",
        response="quarantine",
        level=1,
        state=state,
        created_at=T0,
        expires_at=None,
        body="{}",
    )


def _intent(iid: str, did: str, ordinal: int = 0, irreversible: bool = False) -> IntentRecord:
    return IntentRecord(
        id=iid,
        decision_id=did,
        ordinal=ordinal,
        kind=IntentKind.APPLY,
        action=json.dumps({"type": "remove_peer"}),
        state=IntentState.PENDING,
        irreversible=irreversible,
        created_at=T0,
    )


async def test_duplicate_events_are_stored_once_and_pending_in_order(journal: Journal) -> None:
    first = await accept(journal, _delivery(1), [_event("okta:a"), _event("okta:b")], owner="i1")
    again = await accept(journal, _delivery(2), [_event("okta:b"), _event("okta:c")], owner="i1")
    assert (first.new, first.duplicates) == (2, 0)
    assert (again.new, again.duplicates) == (1, 1)
    pending = await journal.pending_events("i1")
    assert [e.dedup_key for e in pending] == ["okta:a", "okta:b", "okta:c"]
    assert pending[0].trace["traceparent"].startswith("00-")


async def test_pending_duplicate_is_taken_over_by_the_instance_that_sees_it_again(journal: Journal) -> None:
    await accept(journal, _delivery(1), [_event("k:1")], owner="gone")
    await accept(journal, _delivery(2), [_event("k:1")], owner="alive")
    assert [e.dedup_key for e in await journal.pending_events("alive")] == ["k:1"]
    assert await journal.pending_events("gone") == []


async def test_outcome_is_recorded_once_with_its_intents(journal: Journal) -> None:
    await accept(journal, _delivery(1), [_event("k:1")], owner="i1")
    (event,) = await journal.pending_events("i1")
    intents = [_intent("x1", "dec1", 0), _intent("x2", "dec1", 1, irreversible=True)]
    assert await record_outcome(journal, event.seq, T0, [_decision("dec1")], intents)
    assert not await record_outcome(journal, event.seq, T0, [_decision("dec2")], [_intent("x3", "dec2")])
    assert await journal.pending_events("i1") == []
    assert [i.id for i in await journal.open_intents()] == ["x1", "x2"]
    assert await journal.decision("dec2") is None
    assert (await journal.counts())["events.processed"] == 1


async def test_a_failed_outcome_leaves_the_event_pending_and_writes_nothing(journal: Journal) -> None:
    await accept(journal, _delivery(1), [_event("k:1"), _event("k:2")], owner="i1")
    e1, e2 = await journal.pending_events("i1")
    assert await record_outcome(journal, e1.seq, T0, [_decision("dec1")], [_intent("x1", "dec1")])
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await record_outcome(journal, e2.seq, T0, [_decision("dec9")], [_intent("x1", "dec9")])
    assert [e.dedup_key for e in await journal.pending_events("i1")] == ["k:2"]
    assert await journal.decision("dec9") is None


async def test_intent_lifecycle_claims_once_and_closes(journal: Journal) -> None:
    await accept(journal, _delivery(1), [_event("k:1")], owner="i1")
    (event,) = await journal.pending_events("i1")
    await record_outcome(journal, event.seq, T0, [_decision("dec1")], [_intent("x1", "dec1", irreversible=True)])
    claimed = await journal.start_intent("x1", T0)
    assert claimed is not None
    assert (claimed.state, claimed.attempts, claimed.irreversible) == (IntentState.RUNNING, 1, True)
    # A crash here leaves it RUNNING: it is still open, and a second claim counts a second attempt.
    assert [i.id for i in await journal.open_intents()] == ["x1"]
    assert (await journal.start_intent("x1", T0)).attempts == 2  # type: ignore[union-attr]
    await finish_intent(journal, "x1", T0, state=IntentState.DONE, result="{}", verified=True, restore='{"k": 1}')
    assert await journal.start_intent("x1", T0) is None
    assert await journal.open_intents() == []
    done = await journal.intent("x1")
    assert done is not None
    assert (done.verified, done.restore) == (True, '{"k": 1}')


async def test_many_intents_are_claimed_in_one_go_only_while_open(journal: Journal) -> None:
    await accept(journal, _delivery(1), [_event("k:1")], owner="i1")
    (event,) = await journal.pending_events("i1")
    intents = [_intent(f"x{n}", "dec1", n) for n in range(1, 4)]
    await record_outcome(journal, event.seq, T0, [_decision("dec1")], intents)
    await finish_intent(journal, "x3", T0, state=IntentState.DONE, result="{}", verified=True)
    assert await journal.start_intents(["x1", "x2", "x3", "unknown"], T0) == {"x1", "x2"}
    assert await journal.start_intents(["x2"], T0) == {"x2"}  # still open (running): a second attempt
    assert [(i.id, i.attempts) for i in await journal.intents_for("dec1")] == [("x1", 1), ("x2", 2), ("x3", 0)]


async def test_deferred_statements_run_in_order_and_fail_the_whole_transaction(journal: Journal) -> None:
    insert = "INSERT INTO audit (at, actor, kind, ref, detail) VALUES (?, ?, ?, ?, ?)"
    async with journal.transaction() as tx:
        tx.defer(insert, T0, "a", "k", "r1", "{}")
        tx.defer(insert, T0, "b", "k", "r1", "{}")
        rows = await tx.fetch("SELECT actor FROM audit WHERE ref = ? ORDER BY seq", "r1")
        assert [r["actor"] for r in rows] == ["a", "b"]  # visible to the next statement, in order
        tx.defer(insert, T0, "c", "k", "r1", "{}")
    with pytest.raises(Exception, match=r"(?i)null"):
        async with journal.transaction() as tx:
            tx.defer(insert, T0, "d", "k", "r1", "{}")
            tx.defer(insert, T0, None, "k", "r1", "{}")  # fails only at commit
    with pytest.raises(RuntimeError, match="stop"):
        async with journal.transaction() as tx:
            tx.defer(insert, T0, "e", "k", "r1", "{}")
            raise RuntimeError("stop")
    assert [a.actor for a in await journal.audit_trail("r1")] == ["a", "b", "c"]
    await journal.audit(T0, "f", "k", "r1", {})  # the journal goes on after both
    assert [a.actor for a in await journal.audit_trail("r1")] == ["a", "b", "c", "f"]


async def test_decision_transitions_are_compare_and_set(journal: Journal) -> None:
    await accept(journal, _delivery(1), [_event("k:1")], owner="i1")
    (event,) = await journal.pending_events("i1")
    await record_outcome(journal, event.seq, T0, [_decision("dec1")], [])
    assert await journal.transition_decision("dec1", [DecisionState.ACTIVE], DecisionState.UNDONE)
    assert not await journal.transition_decision("dec1", [DecisionState.ACTIVE], DecisionState.EXPIRED)
    assert (await journal.decision("dec1")).state is DecisionState.UNDONE  # type: ignore[union-attr]


async def test_audit_trail_is_append_only_and_ordered(journal: Journal) -> None:
    for n in range(3):
        await journal.audit(T0, "operator", "undo", "dec1", {"n": n})
    trail = await journal.audit_trail("dec1")
    assert [json.loads(a.detail)["n"] for a in trail] == [0, 1, 2]
    assert [a.seq for a in trail] == sorted(a.seq for a in trail)


async def test_everything_survives_closing_and_reopening(journal_url: str) -> None:
    j = await open_journal(journal_url)
    await accept(j, _delivery(1), [_event("k:1")], owner="i1")
    await j.close()
    j = await open_journal(journal_url)
    try:
        assert [e.dedup_key for e in await j.pending_events("i1")] == ["k:1"]
    finally:
        await j.close()


@pytest.mark.parametrize("url", ["mysql://x", "sqlite", "journal.db"])
async def test_unknown_journal_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="journal URL"):
        await open_journal(url)


# -- convergence: what is in force, claims for another try, an undo's cancellations ---------------------

T1, T2, LATER = "2026-03-02T10:16:00+00:00", "2026-03-02T10:17:00+00:00", "2026-03-02T11:00:00+00:00"


async def _decided(journal: Journal, did: str, n: int, state: DecisionState = DecisionState.ACTIVE) -> None:
    await accept(journal, _delivery(n), [_event(f"k:{n}")], owner="i1")
    (event,) = await journal.pending_events("i1")
    intents = [_intent(f"{did}.{k}", did, k) for k in (1, 2, 3)]
    assert await record_outcome(journal, event.seq, T0, [_decision(did, state)], intents)


async def test_an_outstanding_intent_keeps_the_start_of_its_outage_until_it_is_verified(journal: Journal) -> None:
    await _decided(journal, "dec1", 1)
    verified = [FinishedIntent(f"dec1.{k}", IntentState.DONE, "verified", True) for k in (2, 3)]
    await journal.finish_intents(verified, T1)
    pending = FinishedIntent("dec1.1", IntentState.PENDING, "no answer", False, next_try_at=T2)
    await journal.finish_intents([pending], T1)
    await journal.finish_intents([FinishedIntent("dec1.1", IntentState.FAILED, "refused", False)], T2)
    failed = await journal.intent("dec1.1")
    assert failed is not None
    assert (failed.state, failed.result, failed.pending_since, failed.next_try_at) == (
        IntentState.FAILED, "refused", T1, None
    )  # fmt: skip
    await journal.plan_next_try(["dec1.1", "dec1.2"], LATER)  # dec1.2 is not outstanding: left alone
    assert (await journal.intent("dec1.1")).next_try_at == LATER  # type: ignore[union-attr]
    assert (await journal.intent("dec1.2")).next_try_at is None  # type: ignore[union-attr]
    assert await journal.outstanding_of(["dec1", "dec9"]) == {"dec1": 1}
    await journal.finish_intents([FinishedIntent("dec1.1", IntentState.DONE, "verified", True)], LATER)
    done = await journal.intent("dec1.1")
    assert done is not None
    assert (done.state, done.pending_since, done.next_try_at, done.updated_at) == (IntentState.DONE, None, None, LATER)
    assert await journal.outstanding_of(["dec1"]) == {}


async def test_what_is_in_force_is_every_action_of_an_active_decision_and_every_open_undo(journal: Journal) -> None:
    await _decided(journal, "dec1", 1)
    await _decided(journal, "dec2", 2, DecisionState.ACTIVE)
    await journal.finish_intents([FinishedIntent("dec1.1", IntentState.DONE, "verified", True)], T1)
    await journal.finish_intents([FinishedIntent("dec1.2", IntentState.REFUSED, "protected", False)], T1)
    assert await journal.transition_decision("dec2", [DecisionState.ACTIVE], DecisionState.UNDONE)
    undo = IntentRecord("dec2.1.undo", "dec2", 1, IntentKind.UNDO, "{}", IntentState.PENDING, False, T1)
    await journal.add_intents([undo])
    in_force = [i.id for i in await journal.intents_in_force()]
    assert sorted(in_force) == ["dec1.1", "dec1.3", "dec2.1.undo"]  # not the refused one, nor dec2's applies


async def test_a_claim_for_another_try_takes_only_what_is_still_to_converge(journal: Journal) -> None:
    await _decided(journal, "dec1", 1)
    await _decided(journal, "dec2", 2)
    assert await journal.start_intents(["dec1.2"], T1) == {"dec1.2"}  # being carried out since T1
    await journal.finish_intents([FinishedIntent("dec1.3", IntentState.DONE, "verified", True)], T1)
    assert await journal.transition_decision("dec2", [DecisionState.ACTIVE], DecisionState.UNDONE)
    ids = ["dec1.1", "dec1.2", "dec1.3", "dec2.1"]
    claimed = await journal.claim_intents(ids, T2, stale_before=T1)
    # dec1.2 is running and not stale; dec2 has ended. A verified one is claimed (a drift re-applies it).
    assert sorted((i.id, i.state, i.attempts) for i in claimed) == [
        ("dec1.1", IntentState.RUNNING, 1), ("dec1.3", IntentState.RUNNING, 1)
    ]  # fmt: skip
    stale = await journal.claim_intents(["dec1.2"], LATER, stale_before=LATER, attempt=False)
    assert [(i.id, i.attempts) for i in stale] == [("dec1.2", 1)]  # a try that never ended, not counted again


async def test_an_ended_decision_cancels_what_was_not_carried_out_and_says_what_was_tried(journal: Journal) -> None:
    await _decided(journal, "dec1", 1)
    assert await journal.start_intents(["dec1.1"], T1) == {"dec1.1"}
    await journal.finish_intents([FinishedIntent("dec1.1", IntentState.PENDING, "no answer", False)], T1)
    await journal.finish_intents([FinishedIntent("dec1.2", IntentState.DONE, "verified", True)], T1)
    cancelled = await journal.cancel_unapplied("dec1", T2)
    assert sorted((i.id, i.attempts) for i in cancelled) == [("dec1.1", 1), ("dec1.3", 0)]
    states = {i.id: i.state for i in await journal.intents_for("dec1")}
    assert states == {"dec1.1": IntentState.CANCELLED, "dec1.2": IntentState.DONE, "dec1.3": IntentState.CANCELLED}


async def test_a_journal_written_before_the_outage_columns_gets_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    # The intents table as the first release wrote it, with one row.
    old.executescript(
        "CREATE TABLE intents (id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, ordinal INTEGER NOT NULL,"
        " kind TEXT NOT NULL, action TEXT NOT NULL, state TEXT NOT NULL, irreversible BOOLEAN NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, result TEXT, verified BOOLEAN, restore TEXT,"
        " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, trace TEXT NOT NULL);"
        "INSERT INTO intents VALUES ('a.1', 'a', 1, 'apply', '{}', 'done', 0, 1, 'verified', 1, NULL, 't', 't', '{}');"
    )
    old.close()
    journal = await open_journal(f"sqlite:///{path}")
    try:
        kept = await journal.intent("a.1")
        assert kept is not None and kept.state is IntentState.DONE and kept.pending_since is None
    finally:
        await journal.close()


async def test_a_journal_with_the_old_event_indexes_drops_them_on_open_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    journal = await open_journal(f"sqlite:///{path}")
    try:
        await accept(journal, _delivery(1), [_event("k:1"), _event("k:2")], owner="i1")
    finally:
        await journal.close()
    with sqlite3.connect(path) as db:  # the indexes every event was written to before
        db.execute("CREATE INDEX events_pending ON events (status, owner, seq)")
        db.execute("CREATE INDEX events_time ON events (occurred_at)")
        db.execute("CREATE INDEX events_processed ON events (processed_at)")
    db.close()
    journal = await open_journal(f"sqlite:///{path}")
    try:
        assert [e.dedup_key for e in await journal.pending_events("i1")] == ["k:1", "k:2"]
    finally:
        await journal.close()
    with sqlite3.connect(path) as db:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert not names & {"events_pending", "events_time", "events_processed"}
    assert {"events_pending_owner", "events_processed_at"} <= names


async def test_a_pull_source_resumes_from_the_state_it_saved_last(journal_url: str) -> None:
    journal = await open_journal(journal_url)
    try:
        assert await journal.source_state("okta.system_log") is None
        await journal.save_source_state("okta.system_log", {"after": "page-1"}, "2026-12-03T10:00:00+00:00")
        await journal.save_source_state("okta.system_log", {"after": "page-2", "n": 2}, "2026-12-03T10:00:05+00:00")
        await journal.save_source_state("graph.users", {"delta": "link"}, "2026-12-03T10:00:06+00:00")
    finally:
        await journal.close()
    reopened = await open_journal(journal_url)  # a restart reads what the last save left
    try:
        assert await reopened.source_state("okta.system_log") == {"after": "page-2", "n": 2}
        assert await reopened.source_state("graph.users") == {"delta": "link"}
    finally:
        await reopened.close()


def _bulk_batch(n: int, first: int = 0) -> list[tuple[DeliveryRecord, list[EventRecord]]]:
    """A SIEM batch: `n` Kafka messages of one bulk event each."""
    return [
        (DeliveryRecord(f"kafka:t:0:{i}", "kafka:t", T0), [_event(f"siem:{i}", f"10.0.{i // 250 % 250}.{i % 250}")])
        for i in range(first, first + n)
    ]


async def test_an_urgent_delivery_is_stored_before_a_large_bulk_batch_already_in_flight(journal: Journal) -> None:
    finished: list[str] = []

    async def store(name: str, items: list[tuple[DeliveryRecord, list[EventRecord]]]) -> None:
        await journal.accept_batch(items, "i1")
        finished.append(name)

    batch = _bulk_batch(5000)
    cut_off = EventRecord("okta:cut", "user:bob@example.com", T0, "{}", Lane.URGENT)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(store("bulk", batch))
        await asyncio.sleep(0)  # the bulk batch has its turn and its first statements on their way
        tasks.create_task(store("urgent", [(_delivery(1), [cut_off])]))
    assert finished == ["urgent", "bulk"]
    pending = await journal.pending_events("i1", limit=6000)
    assert len(pending) == 5001 and len({e.seq for e in pending}) == 5001
    assert [e.dedup_key for e in pending if e.lane is Lane.BULK] == [f"siem:{i}" for i in range(5000)]


async def test_a_batch_delivered_again_after_part_of_it_was_stored_stores_only_the_rest(journal: Journal) -> None:
    await journal.accept_batch(_bulk_batch(300), "i1")  # what a crash between two parts leaves
    again = await journal.accept_batch(_bulk_batch(1000), "i1")
    assert [a.new for a in again] == [0] * 300 + [1] * 700
    pending = await journal.pending_events("i1", limit=2000)
    assert [e.dedup_key for e in pending] == [f"siem:{i}" for i in range(1000)]
    assert [e.seq for e in pending] == sorted(e.seq for e in pending)
    assert {s for a in again for s in a.seqs if s is not None} == {e.seq for e in pending[300:]}


async def test_plain_processed_marks_say_which_events_were_still_pending(journal: Journal) -> None:
    await journal.accept_batch(_bulk_batch(10), "i1")
    seqs = [e.seq for e in await journal.pending_events("i1")]
    assert await journal.record_outcomes([EventOutcome(s) for s in seqs[:4]], T0) == [True] * 4
    marked = await journal.record_outcomes([EventOutcome(s) for s in seqs], T0)
    assert marked == [False] * 4 + [True] * 6
    assert await journal.pending_events("i1") == []
    assert [e.seq for e in await journal.processed_events_since(T0)] == seqs
