"""A consumer batch is handled in slices: every record once, in its partition's order, none larger than asked."""

from __future__ import annotations

from aiokafka import TopicPartition

from responder.ingest.kafka import slices


def test_slices_keep_every_record_once_in_order_and_bounded() -> None:
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    batch = {a0: list(range(600)), a1: list(range(10)), b0: list(range(245))}
    parts = slices(batch, 250)  # type: ignore[arg-type]  # offsets stand in for records
    assert [sum(len(r) for r in p.values()) for p in parts] == [250, 250, 250, 105]
    for tp, records in batch.items():
        assert [r for p in parts for r in p.get(tp, [])] == records


def test_a_small_batch_is_one_slice_and_an_empty_one_none() -> None:
    batch = {TopicPartition("a", 0): [1, 2, 3]}
    assert slices(batch, 250) == [batch]  # type: ignore[arg-type]
    assert slices({}, 250) == []
