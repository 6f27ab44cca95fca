"""Packets that prove enforcement: a TCP connection through the tunnel, opened from inside a lab node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from responder.lab import Lab


async def tcp(lab: Lab, src: str, host: str, port: int = 9090, timeout: float = 1.0) -> str:
    """'open' if a new TCP connection gets its line echoed back, else what happened."""
    with lab.namespace(src) as ns:
        try:
            async with asyncio.timeout(timeout):
                sock = await ns.connect(host, port)
                reader, writer = await asyncio.open_connection(sock=sock)
                writer.write(b"ping\n")
                line = await reader.readline()
                writer.close()
                return "open" if line == b"ping\n" else "closed"
        except TimeoutError:
            return "dropped"
        except OSError as exc:
            return f"error: {exc}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.02) -> float:
    """Seconds until `check` holds; fails the test with `what` after `timeout`."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(every)
