"""Okta System Log poller: `GET {org}/api/v1/logs`, for what event hooks never deliver.

ThreatInsight's `security.threat.detected`, impersonation and entity-risk events are not hook-eligible, and a
hook delivery that failed twice is gone; the System Log has them all. The poller follows Okta's polling model
(https://developer.okta.com/docs/reference/system-log-query/): the first request asks `since` a time with no
`until`, in ascending order; every answer, an empty one too, carries `Link: <...>; rel="next"`, whose `after`
cursor is where the next poll starts. A full page is followed at once; a short one means caught up, and the
next poll waits `interval_s`.

Durability: each page's events go through the same parser as hook deliveries (`okta.events_of`, so one bad
event costs only itself and every event is keyed `okta:<uuid>`) and the same hand-off; only after it returns
is the next link saved with `journal.save_source_state`. A crash in between reads the page again, and the
journal's dedup keys drop what was already accepted, by this poller or by the hook.

The filter names the event types the policy reads (`eventType eq "a" or eventType eq "b" ...`). Okta does
not document a length limit for `filter`, but the whole request line must stay under common proxy limits
(8 KiB): a filter longer than `MAX_FILTER_CHARS` is not sent, the poller reads every event and keeps the
wanted ones itself (one cursor either way, so a restart resumes exactly). Events are filtered locally in
both cases, so a server that ignores the filter costs bandwidth, not decisions.

Rate limits: `X-Rate-Limit-Remaining` below a tenth of `X-Rate-Limit-Limit` waits for `X-Rate-Limit-Reset`
(bounded); a 429 waits for the reset too, with jitter; 5xx and timeouts back off exponentially; 401/403 say
so in one log line and on /readyz, and the poller keeps trying slowly (a token fixed in Okta is picked up
without a restart).

Auth (`okta_auth`): an API token (`SSWS`) of an admin with a read-only role, or an OAuth service app
(`private_key_jwt` client credentials, scope `okta.logs.read`, no DPoP), its access token cached until expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp

from responder.core.events import Event, Source
from responder.core.rules import RuleSet
from responder.ingest import okta
from responder.ingest.handoff import Handoff
from responder.ingest.okta_auth import CredentialsRefused, OktaCredentials, TokenEndpointBusy
from responder.journal import DeliveryRecord, Journal, JournalUnavailable
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

SOURCE = "okta.system_log"
LOGS_PATH = "/api/v1/logs"
MAX_FILTER_CHARS = 4000
MAX_PAGE_LIMIT = 1000  # Okta's own maximum for `limit`
_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([^";]+)"?')


@dataclass(frozen=True, slots=True)
class SystemLogConfig:
    """What the poller reads and how hard it may pull. `start`: where a poller with no saved cursor begins
    (None: `start_back` before now)."""

    org_url: str
    credentials: OktaCredentials
    event_types: frozenset[str]
    interval_s: float = 5.0
    start: datetime | None = None
    start_back: timedelta = timedelta(minutes=5)
    page_limit: int = MAX_PAGE_LIMIT
    max_pages_per_poll: int = 20
    max_response_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 30.0
    max_wait_s: float = 60.0  # the longest a rate limit, a back-off or a refused token pauses the poller


def event_types_read(rules: RuleSet, configured: Collection[str] = ()) -> frozenset[str]:
    """The Okta event types some signal rule of `rules` matches (a rule for any source counts only if it
    names types), plus `configured`."""
    wanted = set(configured)
    for rule in rules.signals:
        if rule.source in (None, Source.OKTA):
            wanted |= rule.types
    return frozenset(wanted)


def filter_expression(types: Collection[str]) -> str | None:
    """Okta's filter for these event types, or None when it would be too long to send (read all, keep some)."""
    clauses = [f'eventType eq "{t}"' for t in sorted(types) if '"' not in t and "\\" not in t]
    text = " or ".join(clauses)
    return text if clauses and len(text) <= MAX_FILTER_CHARS else None


def next_link(header: str | None) -> str | None:
    """The `rel="next"` URL of a `Link` header (Okta sends `self` and `next` as two headers or one)."""
    for url, rel in _LINK.findall(header or ""):
        if rel.strip().lower() == "next":
            return str(url)
    return None


class SystemLogError(Exception):
    """A poll that failed; `kind` is the metric label, `wait_s` how long to pause, if the server said."""

    def __init__(self, kind: str, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.wait_s = wait_s


@dataclass
class _Status:
    ready: bool = False
    detail: str = "not polled yet"
    failures: int = 0


class SystemLogPoller:
    """Polls until cancelled; never raises for what Okta or the network does (counted, logged, backed off)."""

    def __init__(
        self,
        config: SystemLogConfig,
        handoff: Handoff,
        journal: Journal,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._handoff = handoff
        self._journal = journal
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._status = _Status()
        self._filter = filter_expression(config.event_types)
        self._next: str | None = None
        self._newest_published: str | None = None  # ISO text as Okta wrote it: ordered as its instants
        self._fresh_as_of: datetime | None = None  # lag: the newest event read, or the last poll that caught up
        self.pages = 0
        metrics.source_lag.labels(SOURCE).set_function(self._lag)

    @property
    def ready(self) -> bool:
        return self._status.ready

    def status(self) -> dict[str, object]:
        return {"ready": self._status.ready, "detail": self._status.detail}

    def _lag(self) -> float:
        if self._fresh_as_of is None:
            return 0.0
        return max(0.0, (self._clock() - self._fresh_as_of).total_seconds())

    async def run(self) -> None:
        c = self.config
        if self._filter is None:
            log.warning(
                "okta.system_log: %d event types make too long a filter; reading every event and keeping those",
                len(c.event_types),
            )
        timeout = aiohttp.ClientTimeout(total=c.request_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as http:
            while True:
                pause = c.interval_s
                try:
                    await self.poll(http)
                except SystemLogError as exc:
                    pause = self._failed(exc)
                except JournalUnavailable:
                    self._metrics.source_errors.labels(SOURCE, "journal").inc()
                    pause = min(c.max_wait_s, 2.0 ** min(self._status.failures, 6))
                except Exception:
                    # A fault of ours (or of a hand-off downstream): logged with its traceback and retried
                    # later, so that one source cannot take the webhooks down with it.
                    log.exception("okta.system_log: the poll failed; trying again in %.0fs", c.max_wait_s)
                    self._metrics.source_polls.labels(SOURCE, "error").inc()
                    self._metrics.source_errors.labels(SOURCE, "internal").inc()
                    self._status = _Status(ready=False, detail="internal error: see the log")
                    pause = c.max_wait_s
                await self._sleep(pause)

    async def _resume(self) -> None:
        """The saved next link, if it was made with the filter in use now; otherwise a fresh `since` from the
        newest event accepted (what is read twice is dropped by its dedup key)."""
        state = await self._journal.source_state(SOURCE) or {}
        newest = state.get("newest_published")
        self._newest_published = newest if isinstance(newest, str) else None
        saved = state.get("next")
        if isinstance(saved, str) and state.get("filter") == self._filter and self._same_origin(saved):
            self._next = saved
            log.info("okta.system_log: resuming from the saved cursor")
            return
        since = self.config.start or self._clock() - self.config.start_back
        if self._newest_published is not None:
            with contextlib.suppress(ValueError):
                since = datetime.fromisoformat(self._newest_published.replace("Z", "+00:00"))
        self._next = self._first_url(since)
        log.info("okta.system_log: reading from %s", since.isoformat())

    def _first_url(self, since: datetime) -> str:
        query = {"since": since.astimezone(UTC).isoformat().replace("+00:00", "Z"), "sortOrder": "ASCENDING",
                 "limit": str(min(self.config.page_limit, MAX_PAGE_LIMIT))}  # fmt: skip
        if self._filter is not None:
            query["filter"] = self._filter
        return f"{self.config.org_url.rstrip('/')}{LOGS_PATH}?{urlencode(query)}"

    def _same_origin(self, url: str) -> bool:
        """A next link goes to the same org and path: the token is never sent anywhere else."""
        ours, theirs = urlsplit(self.config.org_url), urlsplit(url)
        return (theirs.scheme, theirs.netloc, theirs.path) == (ours.scheme, ours.netloc, LOGS_PATH)

    async def poll(self, http: aiohttp.ClientSession) -> int:
        """Read pages until one is short (caught up) or `max_pages_per_poll` were read; each page's events
        are accepted before its next link is saved. Returns the events accepted."""
        if self._next is None:
            await self._resume()
        started = self._clock()
        total = 0
        for _ in range(self.config.max_pages_per_poll):
            assert self._next is not None  # noqa: S101 - set by _resume
            raw, following = await self._page(http, self._next)
            total += await self._accept(raw, self._next)
            if following is not None:
                self._next = following
            await self._save(raw)
            if len(raw) < self.config.page_limit:
                self._fresh_as_of = started
                break
        self._metrics.source_polls.labels(SOURCE, "ok").inc()
        if not self._status.ready:
            log.info("okta.system_log: polling %s", self.config.org_url)
        self._status = _Status(ready=True, detail=f"polled at {started.isoformat(timespec='seconds')}")
        return total

    async def _page(self, http: aiohttp.ClientSession, url: str) -> tuple[list[Any], str | None]:
        headers = {"Authorization": await self._authorization(http), "Accept": "application/json"}
        try:
            async with asyncio.timeout(self.config.request_timeout_s), http.get(url, headers=headers) as r:
                body = await _read_capped(r, self.config.max_response_bytes)
                self.pages += 1
                slow_down_s = self._check(r, body)
                link = next_link(", ".join(r.headers.getall("Link", [])))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SystemLogError("unreachable", f"{type(exc).__name__}: {exc or 'timed out'}") from None
        if slow_down_s:
            # Near the limit: the next request would be refused (and a 429 counts against the org, not just us).
            self._metrics.source_errors.labels(SOURCE, "rate_limit_low").inc()
            await self._sleep(slow_down_s)
        if len(body) > self.config.max_response_bytes:
            raise SystemLogError("too_large", f"a page over {self.config.max_response_bytes} bytes")
        try:
            raw = json.loads(body)
        except ValueError:
            raise SystemLogError("invalid", "the answer is not JSON") from None
        if not isinstance(raw, list):
            raise SystemLogError("invalid", "the answer is not a list of LogEvents")
        if link is not None and not self._same_origin(link):
            raise SystemLogError("invalid", f"a next link to another place ({urlsplit(link).netloc}) refused")
        return raw, link

    async def _authorization(self, http: aiohttp.ClientSession) -> str:
        try:
            return await self.config.credentials.authorization(http)
        except CredentialsRefused as exc:
            raise SystemLogError("unauthorized", f"the token endpoint refused: {exc}") from None
        except TokenEndpointBusy as exc:
            kind = "rate_limited" if exc.wait_s is not None else "unreachable"
            raise SystemLogError(kind, str(exc), wait_s=exc.wait_s) from None

    def _check(self, r: aiohttp.ClientResponse, body: bytes) -> float:
        """SystemLogError for a refusal; otherwise how long to wait before the next request (0: none)."""
        reset_in = _reset_in(r.headers, self._clock())
        if r.status == 429:
            raise SystemLogError("rate_limited", "429 Too Many Requests", wait_s=reset_in)
        if r.status in (401, 403):
            self.config.credentials.refused()
            raise SystemLogError(
                "unauthorized", f"{r.status} {_okta_error(body)}: check the API token or service app and its role"
            )
        if r.status >= 400:
            raise SystemLogError("http", f"{r.status} {_okta_error(body)}")
        remaining, limit = _int(r.headers.get("X-Rate-Limit-Remaining")), _int(r.headers.get("X-Rate-Limit-Limit"))
        if remaining is not None and reset_in is not None and remaining <= max(1, (limit or 0) // 10):
            return min(reset_in, self.config.max_wait_s)
        return 0.0

    async def _accept(self, raw: list[Any], url: str) -> int:
        wanted = [e for e in raw if not isinstance(e, dict) or e.get("eventType") in self.config.event_types]
        if not wanted:
            return 0
        envelope = okta.OktaDelivery.model_validate({"data": {"events": wanted}})
        events, rejected = okta.events_of(envelope)
        digest = hashlib.sha256(url.encode() + b"\n" + b"".join(_uuid(e).encode() for e in wanted)).hexdigest()
        delivery = DeliveryRecord(
            f"{SOURCE}:{digest[:24]}", SOURCE, self._clock().isoformat(),
            body=json.dumps(wanted).encode(), rejected=tuple(rejected),
        )  # fmt: skip
        if rejected:
            self._metrics.source_errors.labels(SOURCE, "invalid_event").inc(len(rejected))
            named = "; ".join(f"{r.record_id or r.index}: {r.reason:.200}" for r in rejected[:3])
            log.warning(
                "okta.system_log: %d events skipped (audit trail, kind record.rejected): %s", len(rejected), named
            )
        accepted = await self._handoff.accept(delivery, events)
        self._metrics.events.labels("okta").inc(accepted.new)
        self._metrics.duplicates.labels("okta").inc(accepted.duplicates)
        newest = _newest(events)
        if newest is not None:
            self._fresh_as_of = newest
        return accepted.new

    async def _save(self, raw: list[Any]) -> None:
        published = [p for e in raw if isinstance(e, dict) and isinstance(p := e.get("published"), str)]
        self._newest_published = max([*published, *filter(None, [self._newest_published])], default=None)
        state: dict[str, object] = {"next": self._next, "filter": self._filter}
        if self._newest_published is not None:
            state["newest_published"] = self._newest_published
        await self._journal.save_source_state(SOURCE, state, self._clock().isoformat())

    def _failed(self, exc: SystemLogError) -> float:
        c = self.config
        status = self._status
        status.failures += 1
        outcome = "rate_limited" if exc.kind == "rate_limited" else "error"
        self._metrics.source_polls.labels(SOURCE, outcome).inc()
        self._metrics.source_errors.labels(SOURCE, exc.kind).inc()
        backoff = min(c.max_wait_s, c.interval_s * 2.0 ** min(status.failures, 8))
        if exc.kind == "rate_limited":
            # Until the window resets (bounded), with jitter so that restarted pollers do not come back together.
            pause = min(c.max_wait_s, exc.wait_s if exc.wait_s is not None else backoff) + random.uniform(0, 1)  # noqa: S311
            status.detail = f"rate limited; waiting {pause:.0f}s"
            log.warning("okta.system_log: %s; waiting %.1fs", exc, pause)
            return pause
        was_ready = status.ready
        status.ready = exc.kind == "unreachable" and status.failures < 3 and was_ready
        status.detail = f"{exc.kind}: {exc}"
        pause = c.max_wait_s if exc.kind == "unauthorized" else backoff * random.uniform(0.5, 1.0)  # noqa: S311
        if status.failures == 1 or was_ready or (exc.kind == "unauthorized" and status.failures % 10 == 1):
            # One clear line when it starts failing (a refused token every tenth try), not one a poll.
            log.error("okta.system_log %s: %s; trying again in %.0fs", self.config.org_url, exc, pause)
        return pause


async def _read_capped(r: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, or its first `cap + 1` bytes when it is longer: memory stays bounded whatever is sent."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in r.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    return b"".join(chunks)


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def _reset_in(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds until `X-Rate-Limit-Reset` (epoch seconds), at least one; None when not said."""
    reset = _int(headers.get("X-Rate-Limit-Reset"))
    if reset is None:
        return None
    return max(1.0, reset - now.timestamp())


def _okta_error(body: bytes) -> str:
    """Okta's error body: `errorCode` and `errorSummary`, bounded."""
    try:
        doc = json.loads(body[:4096])
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    return f"{str(doc.get('errorCode', ''))[:32]} {str(doc.get('errorSummary', ''))[:200]}".strip()


def _uuid(raw: Any) -> str:
    uid = raw.get("uuid") if isinstance(raw, dict) else None
    return uid if isinstance(uid, str) else ""


def _newest(events: list[Event]) -> datetime | None:
    return max((e.time for e in events), default=None)


def after_of(url: str) -> str | None:
    """The `after` cursor of a next link (for logs and tests)."""
    values = parse_qs(urlsplit(url).query).get("after")
    return values[0] if values else None
