"""The HTTP listener's guards against connection exhaustion: a cap on open connections with a fast refusal
beyond it, the open-files limit raised to what the cap needs, and accept errors logged at most once per
interval.

Without them 1,100 idle sockets under the usual soft limit of 1,024 open files made /healthz and Okta
deliveries time out, and asyncio logged "socket.accept() out of system resource" a thousand times a second.
Idle and slow connections are closed by aiohttp's keep-alive timeout (`keepalive_timeout`), which in the
aiohttp this package requires (3.14.5) also runs from the moment a connection opens and while a request
head trickles in (tests/adversarial/test_connections.py holds it to that).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import ssl
import time
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

# Open files kept for everything but HTTP connections: the journal, SSH to the hubs, Kafka, logs.
RESERVED_FILES = 256
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def connection_limit(wanted: int) -> int:
    """Raise this process's soft open-files limit as far as the hard limit allows, toward `wanted`
    connections plus the reserve, and return how many connections it allows (at most `wanted`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open files limit raised from %d to %d", soft, target)
            soft = target
    allowed = wanted if soft == resource.RLIM_INFINITY else min(wanted, soft - RESERVED_FILES)
    if allowed < wanted:
        log.warning(
            "the open files limit (%d, hard %d) allows %d connections, not listen.max_connections=%d: "
            "raise LimitNOFILE (systemd) or ulimit -n to at least %d",
            soft, hard, max(allowed, 1), wanted, needed,
        )  # fmt: skip
    return max(allowed, 1)


def only_this_host(host: str) -> bool:
    """`listen.host` is reachable from this machine only (0.0.0.0, ::, a name, or any other address is not)."""
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


class ConnectionCap:
    """A protocol factory around aiohttp's: at most `limit` connections are open at once; each one beyond
    is answered at once with a JSON 503 and closed, so it costs a file for microseconds, not for as long
    as the client likes."""

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], limit: int, on_refused: Callable[[], None]):
        self.limit = limit
        self.open = 0
        self._factory = factory
        self._on_refused = on_refused
        body = json.dumps({"error": f"too many connections (at most {limit}): retry shortly"}).encode()
        self._refusal = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    def __call__(self) -> asyncio.BaseProtocol:
        release = self.take()
        if release is None:
            return _Refusal(self._refusal)
        return _Counted(self._factory(), release)

    def take(self) -> Callable[[], None] | None:
        """A slot for a new connection, as the call that gives it back; None (counted as refused) when full."""
        if self.open >= self.limit:
            self._on_refused()
            return None
        self.open += 1
        return self._release

    def protocol(self) -> asyncio.BaseProtocol:
        """A new protocol of the server behind the cap."""
        return self._factory()

    def _release(self) -> None:
        self.open -= 1


class _Refusal(asyncio.Protocol):
    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a TCP server's transport
        transport.write(self._answer)
        transport.close()


class _Closing(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's protocol, passed every call, with the cap's slot given back when the connection ends."""

    def __init__(self, inner: asyncio.BaseProtocol, release: Callable[[], None]) -> None:
        assert isinstance(inner, asyncio.Protocol)  # noqa: S101 - aiohttp's RequestHandler is one
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._release is not None:
            self._release()
            self._release = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _CountedTLS(asyncio.BufferedProtocol):
    """`_Counted` for a TLS connection: the cap's slot is held by the TCP connection, outside TLS. asyncio's
    own TLS server (`create_server(ssl=...)`) never tells the application protocol of a connection whose
    handshake failed, so a slot counted there would be lost for good to each plain-HTTP request, scanner
    or untrusting client, until every connection was refused."""

    def __init__(self, inner: SSLProtocol, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._release is not None:
            self._release()
            self._release = None
        self._inner.connection_lost(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        buffer: memoryview = self._inner.get_buffer(sizehint)
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        # It may return True (keep the transport open while the application's reading is paused);
        # typeshed says None.
        eof_received: Callable[[], bool | None] = self._inner.eof_received
        return eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class CappedSite(web.BaseSite):
    """`web.TCPSite` with a `ConnectionCap` in front of the runner's protocol factory."""

    __slots__ = ("_handshake_timeout_s", "_host", "_on_refused", "_port", "_tls", "cap")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        on_refused: Callable[[], None],
        backlog: int = 1024,
        tls: Callable[[], ssl.SSLContext] | None = None,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self._on_refused = on_refused
        self._tls, self._handshake_timeout_s = tls, handshake_timeout_s
        self.cap = ConnectionCap(self._factory, max_connections, on_refused)

    def _factory(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None  # noqa: S101 - a site exists only after runner.setup()
        return server()

    @property
    def scheme(self) -> str:
        return "http" if self._tls is None else "https"

    @property
    def name(self) -> str:
        return f"{self.scheme}://{self._host}:{self._port}"

    @property
    def address(self) -> tuple[str, int]:
        sockets = self._server.sockets if isinstance(self._server, asyncio.Server) else ()
        if not sockets:
            return self._host, self._port
        host, port = sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol] = self.cap
        if self._tls is not None:
            factory = _TLSCap(self.cap, self._tls, self._handshake_timeout_s, loop)
        self._server = await loop.create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


class _TLSCap:
    """The cap's protocol factory with TLS between the TCP connection and aiohttp's protocol. Each new
    connection takes the context `tls()` gives at that moment, so a reloaded certificate serves the next
    handshake while connections already open keep theirs. A handshake not done in `handshake_timeout_s`
    is aborted, as a request head that slow would be."""

    def __init__(
        self,
        cap: ConnectionCap,
        tls: Callable[[], ssl.SSLContext],
        handshake_timeout_s: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._cap, self._tls, self._timeout_s, self._loop = cap, tls, handshake_timeout_s, loop

    def __call__(self) -> asyncio.BaseProtocol:
        release = self._cap.take()
        if release is None:
            # Over the cap: a 503 in clear would be unreadable to a TLS client; closing at once is the
            # answer it understands, and costs no handshake.
            return _Closing()
        # No waiter (typeshed wants a future): nothing awaits a server connection's handshake, and a future
        # failed by it and never read would be logged as an error for each failed handshake. The timeout
        # may be a float (typeshed says int).
        tls = SSLProtocol(
            self._loop, self._cap.protocol(), self._tls(), None,  # type: ignore[arg-type]
            server_side=True, ssl_handshake_timeout=self._timeout_s,  # type: ignore[arg-type]
        )  # fmt: skip
        return _CountedTLS(tls, release)


class AcceptErrors:
    """An event loop exception handler: running out of files (or buffers, or memory) while accepting is
    logged at most once per `interval_s`, with how often it happened; anything else goes to the handler
    that was there before. asyncio reports each failed accept, a thousand times a second under a flood."""

    def __init__(
        self,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
        on_error: Callable[[], None] = lambda: None,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._previous = previous
        self._on_error = on_error
        self._interval_s = interval_s
        self._clock = clock
        self._next = float("-inf")
        self._unsaid = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._on_error()
        self._unsaid += 1
        now = self._clock()
        if now < self._next:
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.error(
            "%s: %s (%d times since last logged; open files limit %d): lower listen.max_connections or "
            "raise LimitNOFILE",
            context.get("message", "accept failed"), exc.strerror, self._unsaid, soft,
        )  # fmt: skip
        self._unsaid = 0
        self._next = now + self._interval_s
