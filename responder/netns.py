"""Sockets opened inside another network namespace, without touching the caller's namespace.

A socket keeps the namespace it was created in. `setns(2)` switches only the calling thread, so a
`Namespace` owns one worker thread that enters the namespace once and creates sockets on request; the
event loop's thread never leaves its own namespace. This is how the service, running in the machine's
root namespace on loopback, reaches lab hubs through the lab's management node.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

_CLONE_NEWNET = 0x40000000


class NamespaceError(OSError):
    """The network namespace cannot be entered (missing, or not permitted)."""


def _enter(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NamespaceError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespace:
    """A network namespace (by its path, e.g. /run/netns/NAME) to open sockets in. Close it when done."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise NamespaceError(2, f"network namespace {path} does not exist")
        self.path = path
        self._worker = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{path.name}", initializer=_enter, initargs=(path,)
        )

    def open_socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """Create a socket inside the namespace (blocking call; fast)."""
        return self._worker.submit(socket.socket, family, kind).result(timeout=5)

    async def connect(self, host: str, port: int) -> socket.socket:
        """Open a TCP connection from inside the namespace; the socket is non-blocking.

        Callers bound the wait with `asyncio.timeout()`: a dropped SYN never answers.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        loop = asyncio.get_running_loop()
        sock = await asyncio.wrap_future(self._worker.submit(socket.socket, family, socket.SOCK_STREAM))
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        self._worker.shutdown(wait=False)

    def __enter__(self) -> Namespace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
