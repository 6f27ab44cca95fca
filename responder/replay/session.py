"""The running service as a replay sees it, built once it listens: its admin API (decisions, undo) and a
read-only look at its journal (is every event decided and every action done?)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from responder.replay.clock import VirtualClock
from responder.replay.options import ReplayError

OPEN_INTENTS = ("pending", "running")
POLL_S = 0.02
DECISIONS = "/api/decisions?limit=1000"


class JournalView:
    """A read-only look at the run's SQLite journal: is everything delivered, decided and done?"""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        if not self._path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute(sql, args).fetchall()

    async def received_at(self, delivery_id: str) -> datetime | None:
        """When the service accepted the delivery (its wall clock), or None if it has not."""
        rows = await asyncio.to_thread(self._query, "SELECT received_at FROM deliveries WHERE id = ?", delivery_id)
        return datetime.fromisoformat(rows[0][0]) if rows else None

    async def settled(self) -> bool:
        def check() -> bool:
            pending = self._query("SELECT count(*) FROM events WHERE status = 'pending'")
            running = self._query("SELECT count(*) FROM intents WHERE state IN (?, ?)", *OPEN_INTENTS)
            return bool(pending and running) and pending[0][0] == 0 and running[0][0] == 0

        return await asyncio.to_thread(check)


@dataclass(frozen=True, slots=True)
class Session:
    """One run's service: where it listens, the admin token, its journal and the clock it runs on."""

    http: aiohttp.ClientSession
    url: str
    admin_token: str
    journal: JournalView
    clock: VirtualClock
    settle_timeout_s: float

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def _get(self, path: str) -> Any:
        async with self.http.get(self.url + path, headers=self._auth) as response:
            if response.status != 200:
                raise ReplayError(f"GET {path}: HTTP {response.status} {await response.text()}")
            return await response.json()

    async def decisions(self) -> list[dict[str, Any]]:
        """Every decision, as the admin API lists them."""
        listing: list[dict[str, Any]] = (await self._get(DECISIONS))["decisions"]
        return listing

    async def snapshot(self) -> list[dict[str, Any]]:
        """Every decision in full (with its intents), oldest first."""
        listing = await self.decisions()
        return [await self._get(f"/api/decisions/{d['id']}") for d in sorted(listing, key=lambda d: d["created_at"])]

    async def undo(self, decision_id: str) -> tuple[int, str]:
        """Undo (or reject, if it waits for approval) a decision: the HTTP status and the answer."""
        url = f"{self.url}/api/decisions/{decision_id}/undo"
        async with self.http.post(url, headers=self._auth, json={"actor": "replay"}) as response:
            return response.status, await response.text()

    async def settle(self, what: str) -> None:
        """Wait until no event is pending and no action is open."""
        deadline = time.monotonic() + self.settle_timeout_s
        while not await self.journal.settled():
            if time.monotonic() > deadline:
                raise ReplayError(f"{what}: events or actions still open after {self.settle_timeout_s:g}s")
            await asyncio.sleep(POLL_S)

    async def settle_expiry(self) -> None:
        """Wait until every decision past its TTL (on the virtual clock) has expired, then settle."""
        deadline = time.monotonic() + self.settle_timeout_s
        while True:
            now = self.clock().timestamp()
            due = [
                d for d in await self.decisions()
                if d["state"] == "active" and d.get("expires_at") and d["expires_at"] <= now
            ]  # fmt: skip
            if not due:
                break
            if time.monotonic() > deadline:
                raise ReplayError(f"{len(due)} decisions past their TTL are still active")
            await asyncio.sleep(0.1)
        await self.settle("expiry")
