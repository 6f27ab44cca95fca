"""The notifier: notices in, messages out. `emit` routes, de-duplicates and renders at once, then only
queues in memory; a background task writes the queue to the outbox in batches, and one sender per channel
delivers what is due — under the channel's rate limit, with back-off on failure and a cap on attempts. A
channel that hangs or fails holds up its own messages and nothing else: enforcement only ever calls
`emit`, which does no I/O."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any

from responder.config import Notify
from responder.journal import Journal
from responder.notify.channels import Channel, DeliveryFailed, open_channel
from responder.notify.message import Message, render
from responder.notify.notice import Notice, NoticeKind
from responder.notify.outbox import Outbox, OutboxState, Outgoing
from responder.notify.routing import Dedup, Route, TokenBucket, channels_for

log = logging.getLogger(__name__)
_WAITING = (NoticeKind.AWAITING_APPROVAL, NoticeKind.ESCALATED)
_IDLE_S = 60.0  # a look at the outbox with nothing due: only a safety net, writes and retries wake it
Counter = Callable[[str, str], None]  # (channel, outcome)


def _ignore(_channel: str, _outcome: str) -> None:
    return None


def _no_devices(_subject: str) -> list[str]:
    return []


class Notifier:
    """Implements `Notices`. `devices(subject)`: the names of a subject's devices, for "who"."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        routes: Sequence[Route],
        outbox: Outbox,
        *,
        clock: Callable[[], datetime],
        rate_per_minute: float = 20.0,
        burst: int = 10,
        dedup_window_s: float = 300.0,
        max_attempts: int = 8,
        retry_min_s: float = 1.0,
        retry_max_s: float = 300.0,
        console_url: str | None = None,
        devices: Callable[[str], list[str]] = _no_devices,
        count: Counter = _ignore,
        queue_limit: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channels = dict(channels)
        self._routes = list(routes)
        self._outbox = outbox
        self._clock = clock
        self._mono = monotonic
        self._buckets = {n: TokenBucket(rate_per_minute / 60, burst, monotonic()) for n in channels}
        self._dedup = Dedup(dedup_window_s)
        self._max_attempts = max_attempts
        self._retry = (retry_min_s, retry_max_s)
        self._console_url = console_url
        self._devices = devices
        self._count = count
        self._queue: deque[Outgoing] = deque()
        self._queue_limit = queue_limit
        self._queued = asyncio.Event()
        self._due = {n: asyncio.Event() for n in channels}
        self._serial = 0
        self._links: Callable[[str], list[tuple[str, str]]] | None = None

    def offer_links(self, links: Callable[[str], list[tuple[str, str]]]) -> None:
        """`links(decision_id)`: signed approval links (label, url) for a decision that waits, shown by the
        channels without buttons (Teams, the webhook, e-mail, a Slack incoming webhook)."""
        self._links = links

    # -- emit: on the caller's path, no I/O ------------------------------------------------------------

    def emit(self, notice: Notice) -> None:
        try:
            self._emit(notice)
        except Exception:  # a bug here must not fail enforcement, nor hide
            log.exception("notice %s on %s could not be queued", notice.kind.value, notice.subject)

    def _emit(self, notice: Notice) -> None:
        now = self._mono()
        targets: list[str] = []
        for channel in channels_for(notice, self._routes):
            if channel not in self._channels:
                # Only a notice naming its own channels can name an unknown one (the routes are checked).
                log.warning(
                    "notice %s on %s names channel %r, which notify.channels does not define: not sent there",
                    notice.kind.value, notice.subject, channel,
                )  # fmt: skip
                continue
            # Before rendering: a hub that stays down is reported on every probe, and this is on its path.
            if not self._dedup.first((_dedup_kind(notice), notice.decision_id or notice.subject, channel), now):
                self._count(channel, "deduplicated")
            elif len(self._queue) + len(targets) >= self._queue_limit:
                self._count(channel, "dropped")  # the journal cannot keep up: say so rather than grow unbounded
            else:
                targets.append(channel)
        if not targets:
            return
        if "devices" not in notice.detail and (names := self._devices(notice.subject)):
            notice = Notice(
                notice.kind, notice.at, notice.subject, notice.decision_id, notice.response, notice.actor,
                {**notice.detail, "devices": names}, notice.channels,
            )  # fmt: skip
        links: list[tuple[str, str]] = []
        if notice.decision_id and notice.kind in _WAITING and self._links is not None:
            links = self._links(notice.decision_id)
        body = json.dumps(render(notice, self._console_url, links).to_dict(), default=str)
        for channel in targets:
            self._queue.append(Outgoing(self._next_id(), channel, notice.kind.value, notice.decision_id, body))
        self._queued.set()

    def _next_id(self) -> str:
        """Ids that sort in the order of emission (the outbox sends in that order), unique across instances."""
        self._serial += 1
        return f"{int(self._clock().timestamp() * 1e6):015x}{self._serial:08x}{uuid.uuid4().hex[:8]}"

    # -- background: outbox writer and per-channel senders ---------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Write and deliver until `stop`; then write what is queued, so that it is sent after a restart."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._write_loop(stop), name="notify-outbox")
                for name in self._channels:
                    group.create_task(self._send_loop(name, stop), name=f"notify-{name}")
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
            for channel in self._channels.values():
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _write_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _wait_any(self._queued, stop, timeout=1.0)
            self._queued.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("notifications could not be written to the journal; trying again")
                await _wait_any(stop, timeout=1.0)

    async def flush(self) -> None:
        """Write what is queued to the outbox (it is sent from there, after a restart too)."""
        batch = list(self._queue)
        if not batch:
            return
        await self._outbox.add(batch, self._clock().timestamp(), self._clock().isoformat())
        for _ in batch:
            self._queue.popleft()
        for channel in {o.channel for o in batch}:
            self._due[channel].set()

    async def _send_loop(self, name: str, stop: asyncio.Event) -> None:
        """Deliver the channel's due messages; then sleep until the next is due or new ones are written
        (not polling: the outbox is in the journal that enforcement writes to)."""
        while not stop.is_set():
            self._due[name].clear()  # before reading: a batch written from now on wakes the wait below
            try:
                due = await self._outbox.due(name, self._clock().timestamp())
                for item in due:
                    if stop.is_set():
                        return
                    await self._pace(name, stop)
                    if not await _unless_stopped(self._deliver(self._channels[name], item), stop):
                        return  # left pending: sent after the restart (a receiver may see it twice)
                if due:
                    continue
                nxt = await self._outbox.next_due(name)
                wait = _IDLE_S if nxt is None else min(_IDLE_S, max(0.0, nxt - self._clock().timestamp()))
            except Exception:
                log.exception("notification channel %s: delivery pass failed; trying again", name)
                wait = 1.0
            await _wait_any(self._due[name], stop, timeout=wait)

    async def _pace(self, name: str, stop: asyncio.Event) -> None:
        """Wait for the channel's rate limit: the message stays in the outbox meanwhile, nothing is lost."""
        while (wait := self._buckets[name].take(self._mono())) > 0:
            self._count(name, "rate_limited")
            await _wait_any(stop, timeout=wait)
            if stop.is_set():
                return

    async def _deliver(self, channel: Channel, item: Outgoing) -> None:
        try:
            try:
                await channel.send(Message.from_dict(json.loads(item.body)))
            except DeliveryFailed:
                raise
            except Exception as exc:  # a bug in an adapter: tried again, then given up, like a failure
                log.exception("notification %s to %s: the channel failed unexpectedly", item.id, channel.name)
                raise DeliveryFailed(f"unexpected {type(exc).__name__}") from exc
        except DeliveryFailed as exc:
            attempts = item.attempts + 1
            if exc.permanent or attempts >= self._max_attempts:
                await self._outbox.settle(item, OutboxState.FAILED, exc.reason)
                self._count(channel.name, "failed")
                log.error(  # noqa: TRY400 - the reason is the message; no traceback to show
                    "notification %s to %s given up after %d attempts: %s", item.id, channel.name, attempts, exc.reason
                )
                return
            low, high = self._retry
            delay = min(high, low * 2 ** (attempts - 1)) * (0.5 + random.random() / 2)  # noqa: S311 - jitter
            delay = max(delay, exc.retry_after or 0.0)
            await self._outbox.retry_at(item, self._clock().timestamp() + delay, exc.reason)
            self._count(channel.name, "retried")
            log.warning("notification %s to %s failed (%s); again in %.1fs", item.id, channel.name, exc.reason, delay)
            return
        await self._outbox.settle(item, OutboxState.SENT)
        self._count(channel.name, "sent")


def _dedup_kind(notice: Notice) -> str:
    """What makes two notices the same: their kind, and for `enforced` whether it was verified (the message
    that it is verified after all must follow the one that it was not)."""
    if notice.kind is NoticeKind.ENFORCED:
        return f"{notice.kind.value}:{notice.detail.get('verified')}"
    return notice.kind.value


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `work` unless `stop` comes first (then cancel it): a hanging channel must not hold up a stop."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def notifier_from(
    settings: Notify,
    journal: Journal,
    owner: str,
    *,
    clock: Callable[[], datetime],
    count: Counter = _ignore,
    devices: Callable[[str], list[str]] = _no_devices,
) -> Notifier | None:
    """The notifier `notify:` describes, or None when it names no channel."""
    if not settings.channels:
        return None
    channels = {name: open_channel(name, c) for name, c in settings.channels.items()}
    routes = [Route(r.channels, r.kinds, r.responses, r.states, r.subjects) for r in settings.routes]
    return Notifier(
        channels, routes, Outbox(journal, owner), clock=clock, rate_per_minute=settings.rate_per_minute,
        burst=settings.burst, dedup_window_s=settings.dedup_window_s, max_attempts=settings.max_attempts,
        retry_min_s=settings.retry_min_s, retry_max_s=settings.retry_max_s, console_url=settings.console_url,
        devices=devices, count=count,
    )  # fmt: skip
