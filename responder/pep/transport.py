"""One long-lived SSH connection per hub: pinned host key, keepalives, reconnect with backoff and jitter,
a bound on concurrent channels (below sshd's MaxSessions), and a circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from responder.inventory import HubSpec
from responder.netns import Namespace
from responder.pep.errors import CircuitOpen, HostKeyMismatch, HubRefused, HubUnreachable

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
            raise HubUnreachable(self._hub, "the agent channel is closed")
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

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

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
            raise HubUnreachable(
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
                process = await conn.create_process(AGENT_COMMAND, encoding="utf-8")
                self._agent = AgentChannel(self.name, process)
            return self._agent

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]], slot: asyncio.Semaphore | None = None) -> T:
        """Run `attempt` with the breaker, a timeout and retries on connection failures. Operations are
        idempotent, so a retry after an unknown outcome is safe.

        The timeout bounds the time on the hub, not the wait for a free channel (`slot`): a burst of
        operations queues behind the channel bound instead of timing out and tearing down the connection
        the others are using. Only a connection-level failure drops the connection; a slow command does not.
        """
        s = self.settings
        for n in range(s.retries + 1):
            self._breaker.check(self.name)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if slot is not None:
                        await stack.enter_async_context(slot)
                    async with asyncio.timeout(s.operation_timeout):
                        result = await attempt()
            except HostKeyMismatch:
                self._breaker.failure()
                raise
            except (HubUnreachable, TimeoutError, asyncssh.Error, OSError) as exc:
                self._breaker.failure()
                if self._conn is None or self._conn.is_closed() or _connection_level(exc):
                    await self._drop()
                if n == s.retries:
                    if isinstance(exc, HubUnreachable):
                        raise
                    raise HubUnreachable(self.name, f"{type(exc).__name__}: {exc}") from None
                delay = min(s.backoff_max, s.backoff_base * 2**n)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret
            else:
                self._breaker.success()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

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
            async with conn.create_process(command, encoding="utf-8") as process:
                if stdin is not None:
                    process.stdin.write(stdin)
                process.stdin.write_eof()
                out, err = await process.stdout.read(), await process.stderr.read()
                status = await process.wait()
                return (status.exit_status if status.exit_status is not None else 255), out, err

        return await self._with_retries(attempt, slot=self._channels)

    async def _drop(self) -> None:
        conn, self._conn, self._agent = self._conn, None, None
        if conn is not None:
            conn.abort()

    async def close(self) -> None:
        if self._agent is not None:
            await self._agent.close()
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
        self._conn = self._agent = None
        if self._namespace is not None:
            self._namespace.close()
