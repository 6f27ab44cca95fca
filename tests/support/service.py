"""The real service, started in the test's event loop on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from responder.config import Settings
from responder.journal import Journal
from responder.pep import Hub
from responder.service.service import Service, hubs_from, load_inventory
from responder.telemetry.tracing import tracer


@contextlib.asynccontextmanager
async def running(
    settings: Settings, instance: str = "test", hubs: Mapping[str, Hub] | None = None, **options: Any
) -> AsyncIterator[tuple[Service, str]]:
    """`hubs`: by default the inventory's, as `responder run` builds them."""
    settings = settings.model_copy(update={"listen": settings.listen.model_copy(update={"port": 0})})
    if hubs is None:
        provider = options.get("tracer_provider")
        hubs = hubs_from(load_inventory(settings), tracer(provider) if provider is not None else None)
    service = Service(settings, hubs=hubs, instance=instance, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        async with asyncio.timeout(20):
            started = asyncio.create_task(service.started.wait())
            done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises what stopped it
        assert service.address is not None
        host, port = service.address
        yield service, f"http://{host}:{port}"
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await asyncio.gather(task, return_exceptions=True)


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
