"""The real service, started in the test's event loop on a free loopback port."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from responder.config import Settings
from responder.journal import Journal, open_journal
from responder.service import running as in_process
from responder.service.running import RunningService


def running(settings: Settings, instance: str = "test", **options: Any) -> AbstractAsyncContextManager[RunningService]:
    """The service for the block, unpacking as `(service, base_url)`: the one the replay runs too."""
    return in_process.running(settings, instance=instance, timeout_s=20, **options)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[str, Journal]]:
    """The service for the block, and its journal opened beside it: `(base_url, journal)`."""
    async with running(settings) as (_, base):
        journal = await open_journal(settings.journal)
        try:
            yield base, journal
        finally:
            await journal.close()


def settings(**values: Any) -> Settings:
    return Settings(**values)


def no_hubs(directory: Path) -> Path:
    """An inventory without hubs: the service decides but has nowhere to act (and never falls back to a
    local lab that happens to be up)."""
    path = directory / "no-hubs.yaml"
    path.write_text("hubs: []\n")
    return path


async def event_keys(journal: Journal) -> list[str]:
    """The dedup keys of every event in the journal, in arrival order, processed or not."""
    async with journal.transaction() as tx:
        rows = await tx.fetch("SELECT dedup_key FROM events ORDER BY seq")
    return [r["dedup_key"] for r in rows]


async def event_bodies(journal: Journal) -> list[dict[str, Any]]:
    async with journal.transaction() as tx:
        rows = await tx.fetch("SELECT body FROM events ORDER BY seq")
    return [json.loads(r["body"]) for r in rows]
