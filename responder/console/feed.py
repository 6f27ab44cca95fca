"""The live timeline's source: one poller of the journal's decisions, fanned out to every console that
listens, so a hundred open consoles cost the journal what one does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from responder.journal import DecisionRecord

log = logging.getLogger(__name__)
MAX_LISTENERS = 32
QUEUE = 256  # changes a slow listener may be behind before it is dropped (its browser reconnects)
WINDOW = 200  # the most recent decisions watched for changes


class DecisionsJournal(Protocol):
    async def decisions(self, state: Any = None, limit: int = 100) -> list[DecisionRecord]: ...


class Full(Exception):
    """As many consoles listen as the feed allows."""


def decision_row(d: DecisionRecord) -> dict[str, Any]:
    """What the timeline shows of a decision."""
    body = json.loads(d.body)
    return {
        "id": d.id, "subject": d.subject, "response": d.response, "state": str(d.state), "level": d.level,
        "created_at": d.created_at, "score": body.get("score"),
        "rules": sorted({c["rule"] for c in body.get("contributions", [])}),
        "requires_approval": bool(body.get("requires_approval")),
    }  # fmt: skip


class DecisionFeed:
    def __init__(
        self,
        journal: DecisionsJournal,
        *,
        interval_s: float = 0.2,
        max_listeners: int = MAX_LISTENERS,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._journal = journal
        self.interval_s = interval_s
        self.max_listeners = max_listeners
        self._listeners: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._someone = asyncio.Event()  # the poller sleeps while nobody listens
        self._seen: dict[str, str] = {}  # decision id -> state, as last sent
        self._on_error = on_error
        self.closed = False

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of changed decisions (rows); None in it means the stream ends. `Full` when `max_listeners`
        already listen. Give it back with `unsubscribe`."""
        if self.closed or len(self._listeners) >= self.max_listeners:
            raise Full(f"{self.max_listeners} consoles listen already: try again later")
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE)
        self._listeners.add(queue)
        self._someone.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._listeners.discard(queue)
        if not self._listeners:
            self._someone.clear()

    def close(self) -> None:
        """End every listener's stream (the service stops)."""
        self.closed = True
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
            self._listeners.discard(queue)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll while anyone listens, until `stop`."""
        await self.poll(announce=False)  # what exists already is not news
        while not stop.is_set():
            if not self._listeners:
                waiting = asyncio.ensure_future(self._someone.wait())
                stopping = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
                    stopping.cancel()
                continue
            try:
                async with asyncio.timeout(5):
                    await self.poll()
            except Exception:
                # The journal is briefly unavailable: the timeline lags, the service carries on.
                log.warning("console feed: reading the journal's decisions failed", exc_info=True)
                if self._on_error is not None:
                    self._on_error()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await stop.wait()
        self.close()

    async def poll(self, *, announce: bool = True) -> int:
        """Read the recent decisions once and send those new or changed to every listener; how many."""
        rows = [decision_row(d) for d in await self._journal.decisions(None, WINDOW)]
        changed = [r for r in reversed(rows) if self._seen.get(r["id"]) != r["state"]]
        self._seen = {r["id"]: r["state"] for r in rows}
        if announce:
            for row in changed:
                self._send(row)
        return len(changed)

    def _send(self, row: Mapping[str, Any]) -> None:
        for queue in list(self._listeners):
            try:
                queue.put_nowait(dict(row))
            except asyncio.QueueFull:
                # Too slow to follow: its stream ends (None in place of its oldest change); the browser's
                # EventSource reconnects and the page reloads its rows.
                self._listeners.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)
