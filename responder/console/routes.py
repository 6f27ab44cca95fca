"""The console's routes under /console: login, the pages, the live feed and the buttons.

Authentication is the admin API's (`Operators`): a bearer token is checked once at POST /console/login and
exchanged for a signed session cookie (HttpOnly, SameSite=Strict, Secure over TLS, bound to the operator
and role, expiring after an hour), which the pages and the feed accept beside a bearer header. Every page
needs a viewer, approve and reject an approver, undo an admin; the server checks each request, the page
only hides the buttons one may not use. A POST carried by the cookie must come from the console's own
origin (the Origin header), on top of SameSite=Strict, so another site cannot press a button for you.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from datetime import datetime
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from responder.console import pages, session
from responder.console.feed import DecisionFeed, Full, decision_row
from responder.console.hubs import HubStatuses
from responder.console.plot import score_plot
from responder.core.events import Event
from responder.core.identity import IdentityMap
from responder.core.rules import RuleSet
from responder.journal import DecisionState, Journal, StoredEvent
from responder.policy.history import ScorePoint, score_history
from responder.service.lifecycle import LifecycleError
from responder.service.operators import Handler, Operator, Operators, Refused, Role, operator_of

HEARTBEAT_S = 15.0
MAX_LOGIN_BODY = 16384  # a token of a few kilobytes (a JWT), url-encoded
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
# The least role of each console route; None: public (the login and the static assets, nothing else).
ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/console/login"): None,
    ("POST", "/console/login"): None,
    ("GET", "/console/static/{name}"): None,
    ("POST", "/console/logout"): Role.VIEWER,
    ("GET", "/console"): Role.VIEWER,
    ("GET", "/console/events"): Role.VIEWER,
    ("GET", "/console/subjects/{key}"): Role.VIEWER,
    ("GET", "/console/hubs"): Role.VIEWER,
    ("POST", "/console/decisions/{id}/approve"): Role.APPROVER,
    ("POST", "/console/decisions/{id}/reject"): Role.APPROVER,
    ("POST", "/console/decisions/{id}/undo"): Role.ADMIN,
}
SUBJECT_DECISIONS = 1000  # the most recent decisions searched for a subject's
# The score curve replays at most this many of the subject's newest events (retention bounds them too),
# looked up under at most SUBJECT_NAMES of its names, with at most REPLAYS at once (each in a thread).
SUBJECT_EVENTS = 500
SUBJECT_NAMES = 300
REPLAYS = 2
CURVE_NOTE = (
    "Replayed from the subject's recorded events (the newest {n}) under the rules in force: a dot is an "
    "event, a step its signals; a vertical line a decision and its response; dashed lines the responses' "
    "least scores."
)


class Lifecycle(Protocol):
    async def approve(self, decision_id: str, actor: str) -> None: ...
    async def reject(self, decision_id: str, actor: str) -> None: ...
    async def undo(self, decision_id: str, actor: str) -> None: ...


class ConsoleSession:
    """An `Authenticator`: the console's session cookie, or else what `operators` accept (a bearer header)."""

    def __init__(self, operators: Operators, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._operators = operators
        self._key = key
        self._clock = clock

    async def authenticate(self, request: web.Request) -> Operator | None:
        cookie = request.cookies.get(session.COOKIE)
        if cookie is not None and "Authorization" not in request.headers:
            operator = session.verify(cookie, self._key, self._clock())
            if operator is None:
                raise Refused("the console session has expired or is not valid: log in again")
            if request.method == "POST" and not same_origin(request):
                raise Refused("a console form must be sent from the console's own page (Origin)")
            return operator
        return await self._operators.identify(request)


def same_origin(request: web.Request) -> bool:
    """Whether the request's Origin is this console's host (browsers send Origin on every POST)."""
    origin = request.headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc == request.host


def console_routes(
    journal: Journal,
    lifecycle: Lifecycle,
    operators: Operators,
    feed: DecisionFeed,
    *,
    hubs: Mapping[str, object],
    subject_state: Callable[[str], Mapping[str, object]] | None = None,
    policy: Callable[[], tuple[RuleSet, IdentityMap]] | None = None,
    unenforced: Callable[[], Mapping[str, object]] | None = None,
    key: bytes | None = None,
    clock: Callable[[], float] = time.time,
) -> list[web.RouteDef]:
    """The console. `key` signs the session cookies (a fresh random one by default: a restart logs
    everyone out); `operators` are the admin API's; `policy` gives the rules and identity map in force,
    to draw a subject's score over time from its events (without it: the score at each decision)."""
    key = key or secrets.token_bytes(32)
    # No way to authenticate configured: the pages answer 503, as the admin API does, rather than run open.
    guard = Operators([ConsoleSession(operators, key, clock)] if operators.enabled else [])
    statuses = HubStatuses(hubs)
    replays = asyncio.Semaphore(REPLAYS)

    def page(role: Role | None) -> Callable[[Handler], Handler]:
        """Guarded like the admin API; a browser without a session is sent to the login page instead."""

        def wrap(handler: Handler) -> Handler:
            if role is None:
                raise ValueError("a public console route is not a page")
            guarded = guard.require(role)(handler)

            async def handle(request: web.Request) -> web.StreamResponse:
                response = await guarded(request)
                if (
                    response.status == 401
                    and request.method == "GET"
                    and "text/html" in request.headers.get("Accept", "")
                ):
                    return _see("/console/login")
                return response

            return handle

        return wrap

    async def timeline(request: web.Request) -> web.Response:
        rows = [decision_row(d) for d in await journal.decisions(None, 100)]
        return _html(pages.timeline(rows, operator_of(request)))

    async def subject(request: web.Request) -> web.Response:
        key_ = request.match_info["key"]
        if ":" not in key_ or len(key_) > 300:
            return web.json_response({"error": "a subject key looks like user:alice@example.com"}, status=400)
        views = await _decisions_of(journal, key_)
        state = subject_state(key_) if subject_state is not None else None
        title = f"Score of {key_} over time"
        if policy is not None:
            rules, identity = policy()
            stored = await journal.events_about(identity.names(key_)[:SUBJECT_NAMES], SUBJECT_EVENTS)
            async with replays:  # 500 events replayed in 0.25 s (measured, 2 busy cores): off the loop
                curve = await asyncio.to_thread(_curve, rules, identity, key_, stored, clock())
            # The decisions at the engine's time (the event's), where the curve shows the step they came from.
            marks = [(float(v["body"].get("at") or _epoch(v["created_at"])), str(v["response"])) for v in views]
            thresholds = [(r.id, r.min_score) for r in rules.responses if r.min_score is not None]
            plot = score_plot(
                [(p.at, p.score) for p in curve], title=title, marks=marks, thresholds=thresholds,
                dots=[(p.at, p.score) for p in curve if p.event_id is not None],
            )  # fmt: skip
            note = CURVE_NOTE.format(n=SUBJECT_EVENTS)
            return _html(pages.subject(key_, state, plot, views, operator_of(request), plot_note=note))
        # When the responder decided (journal time, like the "now" point), not when the event says it happened.
        points = [(_epoch(v["created_at"]), float(v["body"].get("score", 0))) for v in views]
        if state is not None and points:
            points.append((clock(), float(str(state.get("score", 0)))))
        plot = score_plot(points, title=title)
        return _html(pages.subject(key_, state, plot, views, operator_of(request)))

    async def hub_page(request: web.Request) -> web.Response:
        outstanding = dict(unenforced()) if unenforced is not None else {}
        return _html(pages.hubs(await statuses.all(), outstanding, operator_of(request)))

    def act(verb: Callable[[str, str], Awaitable[None]], *, waiting_only: bool = False) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            decision = await journal.decision(request.match_info["id"])
            if decision is None:
                return web.json_response({"error": "no such decision"}, status=404)
            if waiting_only and decision.state is not DecisionState.AWAITING_APPROVAL:
                return web.json_response({"error": f"decision is {decision.state.value}, not awaiting"}, status=409)
            try:
                await verb(decision.id, operator_of(request).id)
            except LifecycleError as exc:
                return web.json_response({"error": str(exc)}, status=409)
            return web.json_response({"id": decision.id, "accepted": True}, status=202)

        return handle

    handlers: dict[tuple[str, str], Handler] = {
        ("POST", "/console/logout"): _logout,
        ("GET", "/console"): timeline,
        ("GET", "/console/events"): _stream(feed),
        ("GET", "/console/subjects/{key}"): subject,
        ("GET", "/console/hubs"): hub_page,
        ("POST", "/console/decisions/{id}/approve"): act(lifecycle.approve),
        ("POST", "/console/decisions/{id}/reject"): act(lifecycle.reject, waiting_only=True),
        ("POST", "/console/decisions/{id}/undo"): act(lifecycle.undo),
    }
    guarded = [web.route(m, path, page(ROLES[m, path])(h)) for (m, path), h in handlers.items()]
    return [*_public_routes(operators, key, clock), *guarded]


def _stream(feed: DecisionFeed) -> Handler:
    """GET /console/events: the feed's changes as server-sent events, with a heartbeat."""

    async def events(request: web.Request) -> web.StreamResponse:
        try:
            queue = feed.subscribe()
        except Full as exc:
            return web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": "5"})
        try:
            return await _send(request, queue)
        finally:
            feed.unsubscribe(queue)

    return events


async def _send(request: web.Request, queue: asyncio.Queue[dict[str, Any] | None]) -> web.StreamResponse:
    """Write the queue's rows as server-sent events until it says the stream ends or the browser leaves."""
    stream = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await stream.prepare(request)
    try:
        await stream.write(b"retry: 2000\n: listening\n\n")
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    row = await queue.get()
            except TimeoutError:
                await stream.write(b": still here\n\n")
                continue
            if row is None:
                break
            await stream.write(f"event: decision\ndata: {json.dumps(row)}\n\n".encode())
    except ConnectionResetError:
        pass  # the browser went away (page left, tab closed): nothing to do
    return stream


async def _decisions_of(journal: Journal, subject: str) -> list[dict[str, Any]]:
    """The subject's recent decisions with their actions on the hubs and their audit trail."""
    views = []
    for d in [d for d in await journal.decisions(None, SUBJECT_DECISIONS) if d.subject == subject]:
        intents = await journal.intents_for(d.id)
        views.append({
            **asdict(d), "state": str(d.state), "body": json.loads(d.body),
            "actions": [
                {"action": json.loads(i.action) if i.action else {}, "kind": str(i.kind), "state": str(i.state),
                 "verified": i.verified} for i in intents
            ],
            "audit": [asdict(a) for a in await journal.audit_trail(d.id)],
        })  # fmt: skip
    return views


def _curve(
    rules: RuleSet, identity: IdentityMap, subject: str, stored: list[StoredEvent], end: float
) -> tuple[ScorePoint, ...]:
    """The subject's score over its recorded events, up to `end`. An event that no longer loads is left out
    (the pipeline quarantines those; the curve is an explanation, not the record)."""
    events: list[Event] = []
    for row in stored:
        try:
            events.append(Event.model_validate_json(row.body))
        except ValueError:
            continue
    return score_history(rules, identity, subject, events, end=end)


def _public_routes(operators: Operators, key: bytes, clock: Callable[[], float]) -> list[web.RouteDef]:
    """The login and the static assets: the console's only parts without a session."""

    async def login_form(_: web.Request) -> web.Response:
        return _html(pages.login())

    async def login(request: web.Request) -> web.StreamResponse:
        if not operators.enabled:
            return _html(pages.login("the console is disabled: set RESPONDER_ADMIN_TOKEN or operators"), status=503)
        if "Origin" in request.headers and not same_origin(request):
            return _html(pages.login("log in from the console's own page"), status=403)
        # Read from the stream, not with request.post(): a request whose body was read cannot be cloned, and
        # the clone below is how the token is put to the operators' authenticators as a bearer header.
        raw = await request.content.read(MAX_LOGIN_BODY + 1)
        token = parse_qs(raw.decode(errors="replace")).get("token", [""])[0].strip()
        if not token or len(raw) > MAX_LOGIN_BODY:
            return _html(pages.login("enter a bearer token"), status=400)
        probe = request.clone(headers={"Authorization": f"Bearer {token}", "Host": request.host})
        try:
            operator = await operators.identify(probe)
        except Refused as exc:
            return _html(pages.login(f"not logged in: {exc}"), status=401)
        response = _see("/console")
        response.set_cookie(
            session.COOKIE, session.issue(operator, key, clock()), max_age=session.TTL_S, path="/console",
            httponly=True, secure=request.secure, samesite="Strict",
        )  # fmt: skip
        return response

    # Read once when the routes are made: a page load never reads a file on the event loop.
    assets = {name: resources.files("responder.console").joinpath("static", name).read_text() for name in STATIC}

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(text=assets[name], content_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    return [
        web.get("/console/login", login_form),
        web.post("/console/login", login),
        web.get("/console/static/{name}", static),
    ]


async def _logout(_: web.Request) -> web.StreamResponse:
    response = _see("/console/login")
    response.del_cookie(session.COOKIE, path="/console")
    return response


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html",
        headers={
            # Nothing from elsewhere: the console's own script and style, no inline script, no framing.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
        },
    )  # fmt: skip


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _see(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
