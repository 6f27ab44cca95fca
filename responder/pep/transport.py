"""One long-lived SSH connection per hub: pinned host key, keepalives, a bound on concurrent channels (below
sshd's MaxSessions), a circuit breaker, and what is known of the hub's reachability.

Nothing runs behind the responder's back: an operation whose answer does not come in time aborts its
connection with a reset, which discards whatever is still queued to the hub (a plain close would let the
kernel deliver it when a partition heals, and the hub would run it unobserved). Its outcome is then
established by reading the hub back, never assumed (see responder/service/convergence.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shlex
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from responder.inventory import HubSpec
from responder.netns import Namespace
from responder.pep.errors import CircuitOpen, HostKeyMismatch, HubRefused, HubUnreachable, NotDelivered

T = TypeVar("T")

AGENT_COMMAND = "responder-hub-agent"  # ignored by the forced command; names the intent in sshd's log


# AES-GCM first: asyncssh's ChaCha20-Poly1305 sets up new cipher contexts for every packet, about six
# times the CPU of AES-GCM per packet, on the path of every hub operation.
ENCRYPTION = [
    "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes256-ctr", "aes192-ctr", "aes128-ctr",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class TransportSettings:
    connect_timeout: float = 5.0
    operation_timeout: float = 10.0
    keepalive_interval: float = 10.0
    max_channels: int = 4  # OpenSSH refuses the 11th session on a connection by default
    retries: int = 3
    """Further tries when the connection cannot be made (nothing was sent, so a try is safe). The service
    sets 0: its convergence loop retries, and a caller does not wait for a hub that is down."""
    backoff_base: float = 0.2
    backoff_max: float = 3.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 10.0


def _connection_level(exc: BaseException) -> bool:
    """Errors after which the connection itself cannot be trusted (as opposed to one command failing)."""
    return isinstance(exc, HubUnreachable | asyncssh.ConnectionLost | asyncssh.DisconnectError | OSError)


class _Breaker:
    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold, self.cooldown = threshold, cooldown
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.cooldown else "open"

    def check(self, hub: str) -> None:
        if self.state == "open":
            raise CircuitOpen(hub, f"{self.failures} consecutive failures; retrying after {self.cooldown:g}s")

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class AgentChannel:
    """JSON requests pipelined over one channel to the hub agent; answers are matched by id."""

    def __init__(self, hub: str, process: asyncssh.SSHClientProcess[str]) -> None:
        self._hub = hub
        self._process = process
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def open(self) -> bool:
        return not self._reader.done()

    async def _read(self) -> None:
        try:
            while line := await self._process.stdout.readline():
                answer = json.loads(line)
                answer["answered_at"] = time.time()  # when this operation's read-back reached us
                future = self._pending.pop(answer.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(answer)
        except (asyncssh.Error, OSError, ValueError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(HubUnreachable(self._hub, "the agent channel closed"))
            self._pending.clear()

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        (answer,) = await self.call_many([(op, args)])
        if isinstance(answer, HubRefused):
            raise answer
        return answer

    async def call_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any] | HubRefused]:
        """Send every request at once and wait for all answers: one round trip for a whole plan. The agent
        runs requests on different state (nftables, WireGuard, conntrack) at once and those on the same state
        in the order written; an order across them is the caller's, by waiting for answers (see plan.steps)."""
        if not self.open:
            raise NotDelivered(self._hub, "the agent channel is closed")
        loop = asyncio.get_running_loop()
        sent: list[tuple[int, str, asyncio.Future[dict[str, Any]]]] = []
        lines = []
        for op, args in requests:
            self._next += 1
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._pending[self._next] = future
            sent.append((self._next, op, future))
            lines.append(json.dumps({"id": self._next, "op": op, **args}))
        try:
            self._process.stdin.write("\n".join(lines) + "\n")
            answers = await asyncio.gather(*(f for _, _, f in sent))
        finally:
            for rid, _, _ in sent:
                self._pending.pop(rid, None)
        out: list[dict[str, Any] | HubRefused] = []
        for (_, op, _), answer in zip(sent, answers, strict=True):
            if answer.get("ok"):
                out.append({**answer.get("result", {}), "answered_at": answer["answered_at"]})
            else:
                out.append(HubRefused(self._hub, f"{op}: {answer.get('error', 'refused')}"))
        return out

    async def close(self) -> None:
        self._process.stdin.write_eof()
        self._process.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


def _reset(conn: asyncssh.SSHClientConnection) -> None:
    """Close with a TCP reset: the kernel drops what is still queued instead of retrying it for minutes."""
    sock = conn.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.abort()


class HubTransport:
    def __init__(self, spec: HubSpec, settings: TransportSettings | None = None) -> None:
        self.spec = spec
        self.settings = settings or TransportSettings()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._agent: AgentChannel | None = None
        self._connecting = asyncio.Lock()
        self._channels = asyncio.Semaphore(self.settings.max_channels)
        self._breaker = _Breaker(self.settings.breaker_threshold, self.settings.breaker_cooldown)
        self._namespace = Namespace(spec.ssh.netns) if spec.ssh.netns else None
        self.down_since: float | None = None
        """Wall-clock time of the first failure of the current outage; None while the hub answers."""
        self.last_error = ""
        self._answering: list[Callable[[str], None]] = []

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    def when_answering_again(self, callback: Callable[[str], None]) -> None:
        """Call `callback(hub name)` each time the hub answers after an outage."""
        self._answering.append(callback)

    def _answered(self) -> None:
        self._breaker.success()
        if self.down_since is not None:
            self.down_since = None
            for callback in self._answering:
                callback(self.name)

    def _failed(self, error: str) -> None:
        self._breaker.failure()
        self.last_error = error
        if self.down_since is None:
            self.down_since = time.time()

    async def probe(self, timeout: float) -> bool:
        """Whether the hub's SSH port accepts a TCP connection now: the cheap test, while it is down, of
        whether to try again. Sends nothing; the breaker is closed when it answers, so the next call goes
        through."""
        ssh = self.spec.ssh
        try:
            async with asyncio.timeout(timeout):
                if self._namespace is not None:
                    sock = await self._namespace.connect(ssh.host, ssh.port)
                else:
                    _, writer = await asyncio.open_connection(ssh.host, ssh.port)
                    sock = None
                    writer.close()
        except (TimeoutError, OSError):
            return False
        if sock is not None:
            sock.close()
        self._breaker.success()
        return True

    async def _connect(self) -> asyncssh.SSHClientConnection:
        ssh = self.spec.ssh
        sock = None
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                if self._namespace is not None:
                    sock = await self._namespace.connect(ssh.host, ssh.port)
                return await asyncssh.connect(
                    ssh.host,
                    ssh.port,
                    sock=sock,
                    username=ssh.user,
                    known_hosts=([asyncssh.import_public_key(ssh.host_key)], [], []),
                    client_keys=[str(ssh.client_key)],
                    agent_path=None,  # a stray SSH_AUTH_SOCK must never be used
                    keepalive_interval=self.settings.keepalive_interval,
                    keepalive_count_max=3,
                    connect_timeout=self.settings.connect_timeout,
                    encryption_algs=ENCRYPTION,
                )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyMismatch(self.name, f"host key does not match the pinned key ({exc.reason})") from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            if sock is not None:
                sock.close()
            raise NotDelivered(
                self.name, f"cannot connect to {ssh.host}:{ssh.port}: {exc or type(exc).__name__}"
            ) from None

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._connecting:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._connect()
                self._agent = None
            return self._conn

    async def agent(self) -> AgentChannel:
        conn = await self.connection()
        async with self._connecting:
            if self._agent is None or not self._agent.open:
                try:
                    process = await conn.create_process(AGENT_COMMAND, encoding="utf-8")
                except (asyncssh.Error, OSError) as exc:
                    why = f"cannot open the agent channel: {type(exc).__name__}: {exc}"
                    raise NotDelivered(self.name, why) from None
                self._agent = AgentChannel(self.name, process)
            return self._agent

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]], slot: asyncio.Semaphore | None = None) -> T:
        """Run `attempt` with the breaker and a timeout on the hub.

        A try is repeated only when the request never left (`NotDelivered`): no connection could be made
        (`settings.retries` more times, with back-off and jitter), or a connection that had been idle
        turned out dead when a channel was opened on it (sshd restarted: once, at once). A request that
        left and got no answer in time resets the connection (nothing still queued runs later) and is
        reported, not repeated: its outcome is unknown until the hub is read back. The timeout bounds the
        time on the hub, not the wait for a free channel (`slot`).
        """
        s = self.settings
        failures = 0
        while True:
            self._breaker.check(self.name)
            reused = self._conn is not None and not self._conn.is_closed()
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if slot is not None:
                        await stack.enter_async_context(slot)
                    async with asyncio.timeout(s.operation_timeout):
                        result = await attempt()
            except HostKeyMismatch as exc:
                self._failed(str(exc))
                raise
            except HubRefused:
                self._answered()  # it answered: reachable, and this request is its own failure
                raise
            except TimeoutError:
                await self._drop()
                error = f"no answer within {s.operation_timeout:g} s (connection reset; outcome unknown)"
                self._failed(error)
                raise HubUnreachable(self.name, error) from None
            except NotDelivered as exc:
                await self._drop()
                if reused:
                    continue  # a dead idle connection: the next try connects afresh
                self._failed(str(exc))
                failures += 1
                if failures > s.retries:
                    raise
                delay = min(s.backoff_max, s.backoff_base * 2 ** (failures - 1))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret
            except (HubUnreachable, asyncssh.Error, OSError) as exc:
                if self._conn is None or self._conn.is_closed() or _connection_level(exc):
                    await self._drop()
                error = str(exc) if isinstance(exc, HubUnreachable) else f"{type(exc).__name__}: {exc}"
                self._failed(error)
                if isinstance(exc, HubUnreachable):
                    raise
                raise HubUnreachable(self.name, error) from None
            else:
                self._answered()
                return result

    async def call_agent(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            channel = await self.agent()
            return await channel.call(op, args)

        return await self._with_retries(attempt)

    async def call_agent_many(
        self, requests: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[dict[str, Any] | HubRefused]:
        async def attempt() -> list[dict[str, Any] | HubRefused]:
            channel = await self.agent()
            return await channel.call_many(requests)

        return await self._with_retries(attempt)

    async def run(self, argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
        """One exec channel per command (agentless mode). The argv holds validated values only; quoting
        is defence in depth for the remote shell sshd starts."""
        command = shlex.join(argv)

        async def attempt() -> tuple[int, str, str]:
            conn = await self.connection()
            try:
                opened = await conn.create_process(command, encoding="utf-8")
            except (asyncssh.Error, OSError) as exc:
                raise NotDelivered(self.name, f"cannot open a channel: {type(exc).__name__}: {exc}") from None
            try:
                if stdin is not None:
                    opened.stdin.write(stdin)
                opened.stdin.write_eof()
                out, err = await opened.stdout.read(), await opened.stderr.read()
                status = await opened.wait()
            finally:
                opened.close()
                await opened.wait_closed()
            return (status.exit_status if status.exit_status is not None else 255), out, err

        return await self._with_retries(attempt, slot=self._channels)

    async def _drop(self) -> None:
        conn, self._conn, self._agent = self._conn, None, None
        if conn is not None:
            _reset(conn)

    async def close(self) -> None:
        if self._agent is not None:
            await self._agent.close()
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
        self._conn = self._agent = None
        if self._namespace is not None:
            self._namespace.close()
