"""Events kept in memory between the hand-off and the pipeline: each is taken once, and memory is bounded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from responder.core.events import Event, Source
from responder.ingest.handoff import ParsedEvents


def _event(n: int) -> Event:
    return Event(id=f"e{n}", source=Source.SIEM, type="t", time=datetime(2026, 1, 1, tzinfo=UTC), dedup_key=f"k{n}")


def test_an_event_is_taken_once() -> None:
    kept = ParsedEvents(limit=10)
    kept.put(1, _event(1))
    assert kept.take(1) == _event(1)
    assert kept.take(1) is None  # the second time it comes from the journal


def test_past_the_limit_the_oldest_are_dropped() -> None:
    kept = ParsedEvents(limit=2)
    for n in (1, 2, 3):
        kept.put(n, _event(n))
    assert kept.take(1) is None
    assert [kept.take(2), kept.take(3)] == [_event(2), _event(3)]


def test_a_limit_of_zero_keeps_nothing() -> None:
    kept = ParsedEvents(limit=0)
    kept.put(1, _event(1))
    assert kept.take(1) is None


async def test_a_batch_waits_for_room_until_the_pipeline_takes_events() -> None:
    kept = ParsedEvents(limit=2)
    kept.put(1, _event(1))
    kept.put(2, _event(2))
    waiting = asyncio.create_task(kept.room(1, timeout=10))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # full: the Kafka consumer holds its batch
    kept.take(1)
    await asyncio.wait_for(waiting, 1)


async def test_a_stuck_pipeline_does_not_stop_intake_for_long() -> None:
    kept = ParsedEvents(limit=1)
    kept.put(1, _event(1))
    started = asyncio.get_running_loop().time()
    await kept.room(1, timeout=0.2)
    assert asyncio.get_running_loop().time() - started >= 0.2


async def test_a_batch_waits_as_long_as_the_pipeline_keeps_taking() -> None:
    """Past `timeout` in all, but never `timeout` without progress: the consumer keeps waiting."""
    kept = ParsedEvents(limit=3)
    for seq in (1, 2, 3):
        kept.put(seq, _event(seq))
    waiting = asyncio.create_task(kept.room(3, timeout=0.3))
    for seq in (1, 2):
        await asyncio.sleep(0.2)
        assert not waiting.done()
        kept.take(seq)
    await asyncio.sleep(0.2)
    assert not waiting.done()  # 0.6 s in all, 0.2 since the last take
    kept.take(3)
    await asyncio.wait_for(waiting, 1)
