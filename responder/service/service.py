"""`responder run`: the sources, the journal and the admin API in one process, started and stopped in
order. Each long-running part is a task of one TaskGroup; a stop request (SIGTERM, SIGINT) ends them,
closes the HTTP server first so no delivery is half accepted, then the journal."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

from aiohttp import web

from responder.config import Settings
from responder.ingest.handoff import JournalHandoff
from responder.ingest.webhooks import json_errors
from responder.journal import Journal, open_journal
from responder.service import sources
from responder.service.admin import admin_routes
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, *, instance: str | None = None) -> None:
        self.settings = settings
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = Metrics()
        self.started = asyncio.Event()
        self.address: tuple[str, int] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        journal = await open_journal(self.settings.journal)
        try:
            await self._serve(journal, stop)
        finally:
            await journal.close()

    async def _serve(self, journal: Journal, stop: asyncio.Event) -> None:
        s = self.settings
        handoff = JournalHandoff(journal, self.instance)
        hooks = sources.webhooks(s, handoff, self.metrics)
        consumer = sources.alert_consumer(s, handoff, self.metrics)
        app = web.Application(client_max_size=s.listen.max_body_bytes, middlewares=[json_errors])
        app.add_routes(hooks.routes())

        async def ready() -> Mapping[str, bool]:
            try:
                await journal.counts()
                journal_ok = True
            except Exception:
                journal_ok = False
            return {"journal": journal_ok}

        app.add_routes(admin_routes(journal, _NoLifecycle(), ready, self.metrics.registry, s.admin_token))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, s.listen.host, s.listen.port)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.address = sockets[0].getsockname()[:2] if sockets else (s.listen.host, s.listen.port)
            routes = ", ".join(sorted({r.path for r in hooks.routes()})) or "none (no source is configured)"
            log.info("listening on %s:%d; webhook routes: %s", *self.address, routes)
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(consumer.run(), name="kafka")] if consumer is not None else []
                self.started.set()
                await stop.wait()
                for task in workers:
                    task.cancel()
        finally:
            await runner.cleanup()


class _NoLifecycle:
    async def approve(self, decision_id: str, actor: str) -> None:
        from responder.service.admin import LifecycleError  # noqa: PLC0415

        raise LifecycleError("decisions are not executed by this instance yet")

    async def undo(self, decision_id: str, actor: str) -> None:
        from responder.service.admin import LifecycleError  # noqa: PLC0415

        raise LifecycleError("decisions are not executed by this instance yet")
