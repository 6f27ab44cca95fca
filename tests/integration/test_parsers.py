"""SIEM alerts parsed in worker processes: the same answer as in the event loop, in order, and a worker
that dies costs neither the batch nor the ones after it."""

from __future__ import annotations

import json
import multiprocessing
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from responder.core.events import Event
from responder.ingest.parsers import ParserPool, parse_all
from responder.ingest.siem import load_connectors
from tests.support.payloads import raw

CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"


class Dying:
    """A format that kills the worker process parsing a message that asks for it (a crash in a
    connector's C library, say); in the service's own process it refuses the message instead."""

    name = "dying"

    def records(self, message: Any) -> list[Any]:
        return [message]

    def events(self, message: Any, raw: bytes, received: datetime | None = None) -> list[Event]:
        if isinstance(message, dict) and message.get("die"):
            if multiprocessing.parent_process() is not None:
                os._exit(1)
            raise ValueError("would have died")
        return load_connectors(CONNECTORS)["wazuh"].events({**message, "parsed_by": os.getpid()}, raw)


def _values() -> list[bytes | None]:
    alert = json.loads(raw("siem/wazuh.json"))
    good = [json.dumps({**alert, "id": f"a{n}"}).encode() for n in range(40)]
    return [*good[:10], b"{not json", None, *good[10:30], b'{"rule": {"level": NaN}}', *good[30:]]


async def test_workers_answer_as_the_event_loop_would_in_order() -> None:
    wazuh = load_connectors(CONNECTORS)["wazuh"]
    pool = ParserPool({"alerts": wazuh}, workers=2)
    try:
        await pool.start()
        values = _values()
        here, there = parse_all(values, wazuh), await pool.parse("alerts", values)
    finally:
        await pool.close()
    assert there == here
    assert [x.rejected[0].reason if x.rejected else x.events[0].id for x in there][10:13] == [
        "not valid JSON",
        "empty message",
        "a10",
    ]
    # The journal's JSON comes made from the worker, not computed again here.
    assert all("canonical_json" in e.__dict__ for x in there for e in x.events)


async def test_a_worker_that_dies_costs_nothing() -> None:
    pool = ParserPool({"alerts": Dying()}, workers=1)
    try:
        await pool.start()
        values = _values()
        values[5] = b'{"die": true}'
        answer = await pool.parse("alerts", values)
        assert answer[5].rejected[0].reason == "internal error: ValueError: would have died"  # parsed here instead
        events = [x.events[0] for x in answer if x.events]
        assert [e.id for e in events][:5] == ["a0", "a1", "a2", "a3", "a4"]
        assert {e.attributes["parsed_by"] for e in events} == {os.getpid()}
        again = [x.events[0] for x in await pool.parse("alerts", _values()) if x.events]
        assert len(again) == 40
        assert os.getpid() not in {e.attributes["parsed_by"] for e in again}  # new workers took over
    finally:
        await pool.close()
