"""A TCP echo service for lab nodes: proves with real packets that a port is reachable.

Run inside a node's namespace: `python -m responder.lab.echo 9090 22`. Each connection gets every line
echoed back until it closes, so a test can keep a session open across an enforcement action.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    writer.close()


async def serve(ports: list[int]) -> None:
    servers = [await asyncio.start_server(_echo, "0.0.0.0", port) for port in ports]  # noqa: S104
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    ports = [int(p) for p in sys.argv[1:]]
    if not ports or not all(0 < p < 65536 for p in ports):
        sys.exit("usage: python -m responder.lab.echo PORT [PORT...]")
    asyncio.run(serve(ports))


if __name__ == "__main__":
    main()
