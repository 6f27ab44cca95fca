"""The SQLite journal's turns on its one connection: first come first served, bulk after the rest."""

from __future__ import annotations

import asyncio

from responder.journal.sqlite import _Turns


async def _take_turn(turns: _Turns, name: str, bulk: bool, log: list[str]) -> None:
    async with turns.turn(bulk=bulk):
        log.append(name)
        await asyncio.sleep(0)


async def test_a_queued_turn_that_is_not_bulk_goes_ahead_of_queued_bulk_ones() -> None:
    turns, log = _Turns(), list[str]()
    async with asyncio.TaskGroup() as tasks, turns.turn(bulk=True):
        for name, bulk in (("bulk1", True), ("first1", False), ("bulk2", True), ("first2", False)):
            tasks.create_task(_take_turn(turns, name, bulk, log))
        await asyncio.sleep(0)
        assert turns.others_waiting()
    assert log == ["first1", "first2", "bulk1", "bulk2"]
    assert not turns.others_waiting()


async def test_a_waiter_cancelled_while_queued_leaves_the_queue() -> None:
    turns, log = _Turns(), list[str]()
    async with turns.turn(bulk=False):
        gone = asyncio.create_task(_take_turn(turns, "gone", False, log))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert not turns.others_waiting()
    async with asyncio.timeout(1), turns.turn(bulk=True):
        log.append("after")
    assert log == ["after"] and gone.cancelled()


async def test_a_waiter_cancelled_as_its_turn_came_passes_it_on() -> None:
    turns, log = _Turns(), list[str]()
    async with turns.turn(bulk=False):
        given = asyncio.create_task(_take_turn(turns, "given", False, log))
        await asyncio.sleep(0)
    given.cancel()  # its turn is given (the block above ended), and it has not run since
    async with asyncio.timeout(1), turns.turn(bulk=True):
        log.append("after")
    assert log == ["after"] and given.cancelled()
