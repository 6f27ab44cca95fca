"""`responder run` as a process of its own, for tests that measure it from outside or kill it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import sys
from pathlib import Path

import aiohttp

RESPONDER = str(Path(sys.executable).with_name("responder"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """Started (ready once /healthz answers), killed with SIGKILL, stopped with SIGTERM (exit status 0)."""

    def __init__(self, config: Path, log: Path, base: str, *, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: the client context that trusts the listener, when `base` is https://."""
        self.config, self.log, self.base, self.tls = config, log, base, tls
        self.process: asyncio.subprocess.Process | None = None
        self.kills = 0

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                RESPONDER, "run", "--config", str(self.config), stdout=out, stderr=out
            )
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.base}/healthz", ssl=self.tls or True) as r:
                        if r.status == 200:
                            return
                assert self.process.returncode is None, self.log.read_text()[-3000:]
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self.kills += 1

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise
        assert code == 0, self.log.read_text()[-3000:]
