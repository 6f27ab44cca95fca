"""The service run inside the caller's event loop on a free loopback port: what `responder replay` plays
its cases against and what the tests drive over HTTP. `responder run` does not use it (it owns signals
and the whole process)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

from responder.config import Settings
from responder.pep import Hub
from responder.service.service import Service, hubs_from, load_inventory
from responder.telemetry.tracing import tracer


class ServiceExited(RuntimeError):
    """The service stopped without an error before it was listening."""


class RunningService(NamedTuple):
    """Unpacks as `(service, url)`; `url` is the listener's base URL, e.g. `http://127.0.0.1:40123`
    (`https://` with `listen.tls_cert`)."""

    service: Service
    url: str


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    instance: str,
    hubs: Mapping[str, Hub] | None = None,
    timeout_s: float = 30.0,
    **options: Any,
) -> AsyncIterator[RunningService]:
    """The service, started and listening for the block, stopped after it.

    `settings.listen.port` is replaced by 0 (a free port). `hubs` are the inventory's, built as `responder
    run` builds them, unless the caller passes its own (an in-memory hub, say). `options` are the
    `Service`'s own (`clock`, `tracer_provider`, `recorder`). If the service fails while starting, its
    error is raised here; starting and stopping each take at most `timeout_s` (else `TimeoutError`).
    """
    settings = settings.model_copy(update={"listen": settings.listen.model_copy(update={"port": 0})})
    if hubs is None:
        provider = options.get("tracer_provider")
        traced = tracer(provider) if provider is not None else None
        hubs = hubs_from(load_inventory(settings), traced, settings.enforcement)
    service = Service(settings, hubs=hubs, instance=instance, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop), name=f"service-{instance}")
    try:
        async with asyncio.timeout(timeout_s):
            started = asyncio.create_task(service.started.wait())
            done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                started.cancel()
                task.result()  # raises what stopped it
                raise ServiceExited("the service stopped before it started")
        if service.url is None:
            raise ServiceExited("the service started without a listening address")
        yield RunningService(service, service.url)
    finally:
        stop.set()
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(task, return_exceptions=True)
