"""Reloads asked for by a signal (SIGHUP): the handler only sets a flag; a task carries the reloads out,
one after another, so a reload never runs inside a signal handler and two never interleave."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

SIGNAL = "signal"  # the audit trail's actor for a reload asked for by SIGHUP


class SignalledReloads:
    """`request()` from the signal handler; `run(stop)` calls `reload(SIGNAL)` once per request seen."""

    def __init__(self, reload: Callable[[str], Awaitable[object]], failed: str, log: logging.Logger) -> None:
        self._reload, self._failed, self._log = reload, failed, log
        self._requested = asyncio.Event()

    def request(self) -> None:
        """Ask for a reload (safe from a signal handler); `run` carries it out."""
        self._requested.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Carry out requested reloads until `stop`. A reload that raises is logged; the next one still runs."""
        while not stop.is_set():
            waiting = asyncio.ensure_future(self._requested.wait())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiting, stopping):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._requested.is_set() and not stop.is_set():
                self._requested.clear()
                try:
                    await self._reload(SIGNAL)
                except Exception:
                    self._log.exception(self._failed)
