"""Events kept in memory between the hand-off and the pipeline: each is taken once, and memory is bounded."""

from __future__ import annotations

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
