"""Microsoft Graph change-notification subscriptions, kept alive, and what a user change means.

The service creates the subscriptions it needs (resource `users`, optionally `groups`; changeType
`updated,deleted`) with its notification and lifecycle URLs and its `clientState`, renews each when less
than `renew_below` of its lifetime remains, and answers lifecycle notifications: `reauthorizationRequired`
→ reauthorize, `subscriptionRemoved` → create it again and resynchronise, `missed` → resynchronise through
the users delta query. Subscription ids and the delta link are kept in the journal (`entra.subscriptions`).

A user change notification says only *that* a user changed: the webhook route journals it and answers Graph
at once, then hands it here (`notified`), where the user is read (`GET /users/{id}`; gone → deleted) and a
typed event is handed off: `user.disabled`, `user.enabled`, `user.deleted`. What the route handed over but
this process did not get to (a crash, a full queue) is caught by the delta resynchronisation that follows
every start and every overflow. Application permission: User.Read.All (users), Group.Read.All (groups).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr, ValidationError

from responder.core.events import Event, Severity, Source, Subjects
from responder.ingest.entra import ChangeNotification
from responder.ingest.graph_client import ERROR_KINDS, GraphClient, GraphError, NotFound, Throttled, round_failure
from responder.ingest.handoff import Handoff
from responder.ingest.paths import parse_time
from responder.journal import DeliveryRecord, Journal
from responder.telemetry.metrics import Metrics, bounded

log = logging.getLogger(__name__)
SOURCE = "entra.subscriptions"
Clock = Callable[[], datetime]
USER_FIELDS = "accountEnabled,userPrincipalName,mail"
# Graph's maximum for users and groups: 41,760 minutes (under 29 days).
MAX_LIFETIME_MINUTES = 41_760
MAX_REMEMBERED = 200_000  # users whose last state is kept in memory (about 100 bytes each)
MAX_TRIES = 3  # of one notified change, before it is left to the delta resynchronisation
_USER_ATTRIBUTES = ("accountEnabled", "userPrincipalName", "mail")
_DELETED_PREFIX = re.compile(r"^[0-9a-f]{32}")  # a soft-deleted user's UPN starts with its id, no dashes


@dataclass(frozen=True)
class SubscriptionSettings:
    notification_url: str
    lifecycle_notification_url: str
    client_state: SecretStr = field(repr=False)
    resources: tuple[str, ...] = ("users",)
    lifetime_minutes: int = MAX_LIFETIME_MINUTES
    renew_below: float = 0.5  # renew when less than this fraction of the lifetime remains
    check_interval_s: float = 60.0
    max_backoff_s: float = 600.0
    queue_size: int = 10_000


@dataclass(frozen=True, slots=True)
class UserChange:
    user_id: str
    key: str  # what makes its event's dedup key: the notification it came from


@dataclass(frozen=True, slots=True)
class Lifecycle:
    event: str
    subscription_id: str


Work = UserChange | Lifecycle


def user_event(
    user_id: str, user: dict[str, Any] | None, *, key: str, at: datetime, upn: str | None = None
) -> Event | None:
    """A user as Graph shows it (None: deleted) → `user.disabled` / `user.enabled` / `user.deleted`, or None
    when the object says nothing about whether the account is enabled."""
    if user is None:
        kind, severity = "user.deleted", Severity.HIGH
    elif isinstance(user.get("accountEnabled"), bool):
        enabled = user["accountEnabled"]
        kind, severity = ("user.enabled", Severity.INFO) if enabled else ("user.disabled", Severity.HIGH)
    else:
        return None
    fields = user or {}
    name = fields.get("userPrincipalName") or fields.get("mail") or upn
    name = _DELETED_PREFIX.sub("", name) if user is None and isinstance(name, str) else name
    users = (name,) if isinstance(name, str) and "@" in name else ()
    attributes = {"id": user_id, **{k: v for k, v in fields.items() if k in _USER_ATTRIBUTES}}
    try:
        return Event(
            id=f"{user_id}:{kind}:{key}"[:256],
            source=Source.ENTRA,
            product="graph-user",
            type=kind,
            time=at,
            subjects=Subjects(users=users),
            severity=severity,
            attributes=attributes,
            dedup_key=f"entra:user:{user_id}:{kind}:{key}"[:512],
        )
    except ValidationError:
        return None


def notification_key(n: ChangeNotification) -> str:
    """Stable across Graph's retries of the same notification (they resend the same record)."""
    body = json.dumps(n.model_dump(exclude={"clientState"}), sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def changed_user(n: ChangeNotification) -> str | None:
    """The id of the user a change notification is about, or None when it is about something else."""
    data = (n.model_extra or {}).get("resourceData")
    rid = data.get("id") if isinstance(data, dict) else None
    resource = n.resource or ""
    if not resource.lower().startswith("users"):
        return None
    if isinstance(rid, str) and rid:
        return rid
    tail = resource.rstrip("/").split("/")[-1].removeprefix("users('").removesuffix("')")
    return tail if tail and tail.lower() != "users" else None


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class GraphSubscriptions:
    def __init__(
        self,
        client: GraphClient,
        journal: Journal,
        handoff: Handoff,
        metrics: Metrics,
        *,
        settings: SubscriptionSettings,
        now: Clock,
    ) -> None:
        self._client = client
        self._journal = journal
        self._handoff = handoff
        self._metrics = metrics
        self._settings = settings
        self._now = now
        self._state: dict[str, Any] | None = None  # loaded on the first step
        self._work: deque[Work] = deque()
        self._arrived = asyncio.Event()
        self._resync = True  # every start catches up through delta
        self._head_failures = 0  # of the work item in front
        self._unverified = True  # the saved subscriptions are not yet checked with Graph
        self._names: dict[str, str] = {}  # user id → UPN, from what was read: a deleted user is no longer there
        # user id → the type of the last event handed off for it. Graph notifies any change (a new phone
        # number too), and the delta returns a changed user whole: only a change of state is an event.
        self._said: dict[str, str] = {}
        self._last_ok: datetime | None = None
        self._last_error: str | None = None

    # --- what the webhook route hands over ----------------------------------------------------------

    def notified(self, notifications: Sequence[ChangeNotification]) -> None:
        """Genuine notifications just journaled by the webhook route; returns at once (Graph waits 3 s)."""
        for n in notifications:
            item: Work | None = None
            if n.lifecycleEvent:
                item = Lifecycle(n.lifecycleEvent, n.subscriptionId)
            elif (user := changed_user(n)) is not None:
                item = UserChange(user, notification_key(n))
            if item is None:
                continue
            if len(self._work) >= self._settings.queue_size:
                self._resync = True  # dropped here, caught up through delta
            else:
                self._work.append(item)
        self._arrived.set()

    # --- status ---------------------------------------------------------------------------------------

    @property
    def subscriptions(self) -> dict[str, dict[str, str]]:
        return dict((self._state or {}).get("subscriptions", {}))

    @property
    def ready(self) -> bool:
        return bool(self.status()["ready"])

    def status(self) -> dict[str, object]:
        if self._last_error is not None:
            return {"ready": False, "detail": self._last_error}
        missing = [r for r in self._settings.resources if r not in self.subscriptions]
        if self._last_ok is None or missing:
            return {"ready": False, "detail": f"no subscription yet for {', '.join(missing) or 'users'}"}
        return {"ready": True, "detail": f"{len(self.subscriptions)} subscriptions; checked {_iso(self._last_ok)}"}

    # --- the loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        while True:
            wait = self._settings.check_interval_s
            try:
                await self.step()
                failures = 0
            except Throttled as exc:
                self._failed("rate_limited", exc)
                wait, failures = exc.retry_after_s, failures + 1
            except Exception as exc:  # Graph, the journal, a bug: counted and logged, never the service's end
                failures += 1
                self._failed("error", round_failure(exc, SOURCE, log))
                wait = min(self._settings.check_interval_s * 2**failures, self._settings.max_backoff_s)
            self._metrics.source_lag.labels(SOURCE).set(
                (self._now() - self._last_ok).total_seconds() if self._last_ok else 0.0
            )
            self._arrived.clear()
            if failures or self._work or self._resync:  # backing off: new work waits too (it stays queued)
                await asyncio.sleep(wait if failures else 0)
                continue
            try:
                async with asyncio.timeout(wait):
                    await self._arrived.wait()
            except TimeoutError:
                pass

    def _failed(self, outcome: str, exc: GraphError) -> None:
        self._metrics.source_polls.labels(SOURCE, outcome).inc()
        self._metrics.source_errors.labels(SOURCE, bounded(exc.kind, ERROR_KINDS)).inc()
        self._last_error = str(exc)
        log.warning("%s: %s", SOURCE, exc)

    async def step(self) -> None:
        """Everything due now: what was notified, a resynchronisation, subscriptions to create or renew."""
        if self._state is None:
            self._state = await self._journal.source_state(SOURCE) or {"subscriptions": {}}
            self._unverified = True
        if self._unverified:  # until it went through: a throttled start tries again
            await self._verify()
            self._unverified = False
        await self._keep_alive()
        while self._work:
            try:
                await self._handle(self._work[0])
            except Throttled:
                raise
            except GraphError:
                # One that keeps failing (a permission missing, a bad answer) must not hold the rest up:
                # after a few tries it is left to the delta resynchronisation.
                self._head_failures += 1
                if self._head_failures < MAX_TRIES:
                    raise
                log.warning("%s: giving up on %s; the next resynchronisation covers it", SOURCE, self._work[0])
                self._resync = True
            self._work.popleft()
            self._head_failures = 0
        if self._resync:
            await self.resync()
        self._metrics.source_polls.labels(SOURCE, "ok").inc()
        self._last_ok, self._last_error = self._now(), None

    async def _save(self) -> None:
        assert self._state is not None  # noqa: S101 - loaded by the first step
        await self._journal.save_source_state(SOURCE, self._state, _iso(self._now()))

    async def _verify(self) -> None:
        """Subscriptions saved by an earlier run that Graph no longer has are forgotten (then created)."""
        for resource, sub in list(self.subscriptions.items()):
            try:
                await self._client.call("GET", f"/subscriptions/{sub['id']}")
            except NotFound:
                log.warning("%s: subscription %s for %s is gone; creating another", SOURCE, sub["id"], resource)
                self._state_subs().pop(resource, None)
                self._resync = True

    def _state_subs(self) -> dict[str, dict[str, str]]:
        assert self._state is not None  # noqa: S101 - loaded by the first step
        subs: dict[str, dict[str, str]] = self._state.setdefault("subscriptions", {})
        return subs

    async def _keep_alive(self) -> None:
        s = self._settings
        lifetime = timedelta(minutes=s.lifetime_minutes)
        for resource in s.resources:
            sub = self._state_subs().get(resource)
            now = self._now()
            if sub is None or parse_time(sub["expires"], field="expires") <= now:
                await self._create(resource)
            elif parse_time(sub["expires"], field="expires") - now < lifetime * s.renew_below:
                await self._renew(resource, sub["id"])

    async def _create(self, resource: str) -> None:
        s = self._settings
        body = {
            "changeType": "updated,deleted",
            "notificationUrl": s.notification_url,
            "lifecycleNotificationUrl": s.lifecycle_notification_url,
            "resource": resource,
            "expirationDateTime": _iso(self._now() + timedelta(minutes=s.lifetime_minutes)),
            "clientState": s.client_state.get_secret_value(),
        }
        answer = await self._client.call("POST", "/subscriptions", body)
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise GraphError("bad_response", "POST /subscriptions: no id in the answer")
        given = answer.get("expirationDateTime")
        self._state_subs()[resource] = {"id": answer["id"], "expires": str(given or body["expirationDateTime"])}
        await self._save()
        log.info("%s: subscribed to %s (%s) until %s", SOURCE, resource, answer["id"], answer.get("expirationDateTime"))

    async def _renew(self, resource: str, sub_id: str) -> None:
        expires = _iso(self._now() + timedelta(minutes=self._settings.lifetime_minutes))
        try:
            answer = await self._client.call("PATCH", f"/subscriptions/{sub_id}", {"expirationDateTime": expires})
        except NotFound:
            log.warning("%s: subscription %s for %s is gone; creating another", SOURCE, sub_id, resource)
            self._resync = True
            await self._create(resource)
            return
        given = answer.get("expirationDateTime") if isinstance(answer, dict) else None
        self._state_subs()[resource] = {"id": sub_id, "expires": str(given or expires)}
        await self._save()
        log.info("%s: renewed %s for %s until %s", SOURCE, sub_id, resource, given or expires)

    def _resource_of(self, sub_id: str) -> str | None:
        return next((r for r, sub in self.subscriptions.items() if sub.get("id") == sub_id), None)

    async def _handle(self, item: Work) -> None:
        if isinstance(item, UserChange):
            await self._user_changed(item)
            return
        resource = self._resource_of(item.subscription_id)
        if item.event == "reauthorizationRequired" and resource is not None:
            try:
                await self._client.call("POST", f"/subscriptions/{item.subscription_id}/reauthorize")
                log.info("%s: reauthorized %s", SOURCE, item.subscription_id)
            except NotFound:
                self._state_subs().pop(resource, None)
                await self._create(resource)
                self._resync = True
        elif item.event == "subscriptionRemoved" and resource is not None:
            self._state_subs().pop(resource, None)
            await self._create(resource)
            self._resync = True  # what changed while there was no subscription
        elif item.event == "missed":
            self._resync = True
        else:
            log.info("%s: lifecycle %.64s for %s, not ours or nothing to do", SOURCE, item.event, item.subscription_id)

    async def _user_changed(self, change: UserChange) -> None:
        try:
            user: dict[str, Any] | None = await self._client.call(
                "GET", f"/users/{change.user_id}?$select={USER_FIELDS}"
            )
        except NotFound:
            user = await self._deleted_user(change.user_id)
            name = self._name_of(change.user_id, user)
            event = user_event(change.user_id, None, key=change.key, at=self._now(), upn=name)
        else:
            self._remember(change.user_id, user)
            event = user_event(change.user_id, user, key=change.key, at=self._now())
        if event is not None and self._news(change.user_id, event):
            await self._accept(f"user:{change.user_id}:{change.key}", [event], {"id": change.user_id, "user": user})

    async def _deleted_user(self, user_id: str) -> dict[str, Any] | None:
        """A soft-deleted user stays 30 days in the directory's deleted items, with its mail and (prefixed) UPN."""
        try:
            found = await self._client.call("GET", f"/directory/deletedItems/{user_id}?$select={USER_FIELDS}")
        except NotFound:
            return None
        return found if isinstance(found, dict) else None

    def _name_of(self, user_id: str, user: dict[str, Any] | None) -> str | None:
        for value in ((user or {}).get("mail"), (user or {}).get("userPrincipalName")):
            if isinstance(value, str) and "@" in value:
                return _DELETED_PREFIX.sub("", value)
        return self._names.get(user_id)

    def _remember(self, user_id: str, user: Any) -> None:
        if isinstance(user, dict) and isinstance(name := user.get("userPrincipalName") or user.get("mail"), str):
            self._names[user_id] = name

    async def resync(self) -> int:
        """Read the users delta from the saved delta link, handing off an event for each account enabled,
        disabled or deleted; without a link, read every user once for a baseline (no events: a state, not a
        change). The new delta link is saved after the events are accepted. Returns the events accepted."""
        assert self._state is not None  # noqa: S101 - loaded by the first step
        link = self._state.get("delta_link")
        baseline = not isinstance(link, str)
        url = f"/users/delta?$select={USER_FIELDS}" if baseline else str(link)
        key = hashlib.sha256(url.encode()).hexdigest()[:32]
        new, delta_link = 0, None
        async for page in self._client.pages(url):
            events: list[Event] = []
            for user in page.items:
                uid = user.get("id")
                if not isinstance(uid, str):
                    continue
                removed = "@removed" in user
                if not removed:
                    self._remember(uid, user)
                if baseline:
                    continue
                event = user_event(
                    uid, None if removed else user, key=f"delta:{key}", at=self._now(), upn=self._names.get(uid)
                )
                if event is not None and self._news(uid, event):
                    events.append(event)
            if events:
                new += await self._accept(f"delta:{key}:{len(events)}:{events[0].id}", events, {"value": page.items})
            delta_link = page.delta_link or delta_link
        if delta_link is None:
            raise GraphError("bad_response", "the users delta ended without an @odata.deltaLink")
        self._state["delta_link"] = delta_link
        await self._save()
        self._resync = False
        log.info("%s: users %s; %d events", SOURCE, "baseline read" if baseline else "resynchronised", new)
        return new

    def _news(self, user_id: str, event: Event) -> bool:
        """Whether `event` says something new of the user (this process forgets on restart: one repeat then)."""
        return self._said.get(user_id) != event.type

    async def _accept(self, delivery_id: str, events: list[Event], body: dict[str, Any]) -> int:
        raw = json.dumps(body, sort_keys=True, default=str).encode()
        delivery = DeliveryRecord(f"{SOURCE}:{delivery_id}"[:512], "entra", _iso(self._now()), body=raw)
        accepted = await self._handoff.accept(delivery, events)
        for event in events:  # said only once it is in the journal: a failed hand-off is tried again
            user_id = str(event.attributes["id"])
            self._said.pop(user_id, None)
            if len(self._said) >= MAX_REMEMBERED:
                del self._said[next(iter(self._said))]  # the oldest: dicts keep insertion order
            self._said[user_id] = event.type
        self._metrics.events.labels("entra").inc(accepted.new)
        self._metrics.duplicates.labels("entra").inc(accepted.duplicates)
        return accepted.new
