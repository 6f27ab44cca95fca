"""The real service, started in the test's event loop on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from responder.config import Settings
from responder.service.service import Service


@contextlib.asynccontextmanager
async def running(settings: Settings, instance: str = "test") -> AsyncIterator[tuple[Service, str]]:
    settings = settings.model_copy(update={"listen": settings.listen.model_copy(update={"port": 0})})
    service = Service(settings, instance=instance)
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
