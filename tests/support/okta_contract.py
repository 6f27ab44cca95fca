"""A contract server for Okta's System Log API: NOT Okta.

Written from Okta's documentation of `GET /api/v1/logs`
(https://developer.okta.com/docs/api/openapi/okta-management/management/tags/systemlog,
https://developer.okta.com/docs/reference/system-log-query/, rate limits:
https://developer.okta.com/docs/reference/rl-best-practices/, errors:
https://developer.okta.com/docs/reference/error-codes/). What it honours:

- auth: `Authorization: SSWS <token>`; anything else is 401 with Okta's error body (`E0000011`).
- `since`, `until`, `filter` (`eventType eq "..."` joined by `or`; anything else is 400 `E0000001`), `q`
  (ignored), `limit` (default 100, at most 1000), `sortOrder` (ASCENDING, the default, or DESCENDING), and
  `after`, an opaque cursor handed out in `Link: <...>; rel="next"`.
- a *polling* request (no `until`, ascending) always answers with a next link, an empty page too, whose
  cursor is where the log ended; a bounded one gives a next link only while more events remain.
- OAuth service apps (https://developer.okta.com/docs/guides/implement-oauth-for-okta-serviceapp/):
  `POST /oauth2/v1/token`, client credentials with a `private_key_jwt` client assertion (signature, `iss` =
  `sub` = client id, `aud` the token URL, `exp`, a `jti` used once), the scopes granted; errors as
  `{"error", "error_description"}` (`invalid_client`, `invalid_scope`, `invalid_dpop_proof` when the app
  requires DPoP); the access token is accepted as `Bearer` on the logs until `expires_in` has passed.
- rate limits: every answer carries `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` (epoch seconds) for
  a window of `limit_per_window` requests; past it, 429 with `E0000047` until the window resets.

Tests steer it: `add(...)` appends an event to the log, `fail(status, count)` queues faults,
`on_page(...)` runs after a page was sent (a process to kill mid-way), `requests` records what arrived.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web

Json = dict[str, Any]
MAX_LIMIT = 1000
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_CLAUSE = re.compile(r'^\s*eventType\s+eq\s+"([^"\\]+)"\s*$')


def log_event(
    event_type: str,
    *,
    target_login: str | None = None,
    actor_login: str | None = None,
    actor_ip: str | None = None,
    published: datetime | None = None,
    uid: str | None = None,
    severity: str = "INFO",
    **extra: Any,
) -> Json:
    """A LogEvent as the System Log returns it (the members the responder reads, and a few more)."""
    when = (published or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if actor_ip is not None:
        actor: Json = {"id": actor_ip, "type": "IP address", "alternateId": "unknown", "displayName": actor_ip}
    else:
        login = actor_login or "admin@example.com"
        actor = {"id": "00u" + login.split("@")[0], "type": "User", "alternateId": login, "displayName": login}
    event: Json = {
        "uuid": uid or str(uuid.uuid4()),
        "published": when,
        "eventType": event_type,
        "version": "0",
        "severity": severity,
        "displayMessage": event_type,
        "actor": actor,
        "client": {"ipAddress": actor_ip or "198.51.100.7"},
        "outcome": {"result": "SUCCESS"},
        "target": [
            {"id": "00u" + target_login.split("@")[0], "type": "User", "alternateId": target_login,
             "displayName": target_login}
        ] if target_login else [],
        "debugContext": {"debugData": {}},
        "transaction": {"type": "WEB", "id": uuid.uuid4().hex},
    }  # fmt: skip
    event.update(extra)
    return event


@dataclass(frozen=True)
class _App:
    public_key_pem: str
    scopes: frozenset[str]
    require_dpop: bool
    lifetime_s: int


@dataclass
class Seen:
    path_qs: str
    status: int
    at: float
    query: dict[str, str]


def _cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"pos:{position}".encode()).decode().rstrip("=")


def _position(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        return None
    return int(text[4:]) if text.startswith("pos:") and text[4:].isdigit() else None


def _error(status: int, code: str, summary: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oae" + uuid.uuid4().hex[:20],
            "errorCauses": []}  # fmt: skip
    return web.json_response(body, status=status, headers=headers)


class OktaSystemLogContract:
    def __init__(self, api_token: str, *, limit_per_window: int = 600, window_s: float = 60.0) -> None:
        self.api_token = api_token
        self.limit_per_window = limit_per_window
        self.window_s = window_s
        self.log: list[tuple[float, Json]] = []  # (persisted at, event), in the order Okta stored them
        self.requests: list[Seen] = []
        self.faults: list[tuple[int, int]] = []  # (status, how many more times)
        self.page_delay_s = 0.0
        self._window_start = time.time()
        self._used = 0
        self.pages_with_events = 0
        self.apps: dict[str, _App] = {}
        self.access_tokens: dict[str, tuple[float, frozenset[str]]] = {}
        self.token_requests: list[tuple[str, tuple[str, str, int] | None]] = []  # (client id, error or None)
        self._jtis: set[str] = set()
        self._on_page: Callable[[int], Any] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/logs", self.logs)
        app.router.add_post("/oauth2/v1/token", self.token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def register_app(
        self,
        client_id: str,
        public_key_pem: str,
        *,
        scopes: frozenset[str] = frozenset({"okta.logs.read"}),
        require_dpop: bool = False,
        lifetime_s: int = 3600,
    ) -> None:
        """A service app whose client assertions `public_key_pem` verifies."""
        self.apps[client_id] = _App(public_key_pem, scopes, require_dpop, lifetime_s)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, error = self._client(form)
        if error is not None:
            self.token_requests.append((client_id, error))
            return web.json_response({"error": error[0], "error_description": error[1]}, status=error[2])
        app = self.apps[client_id]
        if app.require_dpop and "DPoP" not in request.headers:
            self.token_requests.append((client_id, ("invalid_dpop_proof", "", 400)))
            return web.json_response(
                {"error": "invalid_dpop_proof", "error_description": "The DPoP proof JWT header is missing."},
                status=400,
            )
        wanted = set(str(form.get("scope", "")).split())
        if not wanted or not wanted <= app.scopes:
            self.token_requests.append((client_id, ("invalid_scope", "", 400)))
            return web.json_response(
                {"error": "invalid_scope", "error_description": "The following scopes are not allowed."}, status=400
            )
        token = uuid.uuid4().hex + uuid.uuid4().hex
        self.access_tokens[token] = (time.time() + app.lifetime_s, frozenset(wanted))
        self.token_requests.append((client_id, None))
        return web.json_response(
            {"token_type": "Bearer", "expires_in": app.lifetime_s, "access_token": token, "scope": " ".join(wanted)}
        )

    def _client(self, form: Any) -> tuple[str, tuple[str, str, int] | None]:
        """The client id the assertion proves, or the error Okta answers."""
        if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != ASSERTION_TYPE:
            return "", ("invalid_client", "grant_type or client_assertion_type is missing or wrong.", 401)
        assertion = str(form.get("client_assertion", ""))
        try:
            client_id = str(jwt.decode(assertion, options={"verify_signature": False}).get("iss", ""))
        except jwt.PyJWTError:
            return "", ("invalid_client", "The client_assertion token is malformed.", 401)
        app = self.apps.get(client_id)
        if app is None:
            return client_id, ("invalid_client", "Client authentication failed.", 401)
        try:
            claims = jwt.decode(
                assertion, app.public_key_pem, algorithms=["RS256", "ES256"], audience=f"{self.url}/oauth2/v1/token",
                issuer=client_id, options={"require": ["exp", "iat", "jti", "sub"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            return client_id, ("invalid_client", f"The client_assertion token is invalid: {exc}", 401)
        if claims["sub"] != client_id or claims["jti"] in self._jtis:
            return client_id, ("invalid_client", "The client_assertion token has already been used.", 401)
        self._jtis.add(claims["jti"])
        return client_id, None

    def _authorized(self, header: str) -> bool:
        if header == f"SSWS {self.api_token}":
            return True
        scheme, _, token = header.partition(" ")
        granted = self.access_tokens.get(token) if scheme == "Bearer" else None
        return granted is not None and granted[0] > time.time() and "okta.logs.read" in granted[1]

    def add(self, *events: Json) -> None:
        for event in events:
            self.log.append((time.time(), event))

    def fail(self, status: int, count: int = 1) -> None:
        self.faults.append((status, count))

    def on_page(self, hook: Callable[[int], Any] | None) -> None:
        """`hook(n)` after the n-th page (1-based) with events was answered."""
        self._on_page = hook

    @property
    def pages_served(self) -> int:
        return sum(1 for r in self.requests if r.status == 200)

    def _rate_headers(self) -> dict[str, str]:
        now = time.time()
        if now - self._window_start >= self.window_s:
            self._window_start, self._used = now, 0
        reset = int(self._window_start + self.window_s) + 1
        return {"X-Rate-Limit-Limit": str(self.limit_per_window),
                "X-Rate-Limit-Remaining": str(max(0, self.limit_per_window - self._used)),
                "X-Rate-Limit-Reset": str(reset)}  # fmt: skip

    async def logs(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        self.requests.append(Seen(request.path_qs, response.status, time.time(), dict(request.query)))
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        rate = self._rate_headers()
        refused = self._refusal(request, rate)
        return refused if refused is not None else await self._page(request, rate)

    def _refusal(self, request: web.Request, rate: dict[str, str]) -> web.Response | None:
        """401 for a wrong token, 429 past the window's limit, or a queued fault."""
        if not self._authorized(request.headers.get("Authorization", "")):
            return _error(401, "E0000011", "Invalid token provided")
        if self._used >= self.limit_per_window:
            rate["X-Rate-Limit-Remaining"] = "0"
            return _error(429, "E0000047", "API call exceeded rate limit due to too many requests.", rate)
        self._used += 1
        rate["X-Rate-Limit-Remaining"] = str(self.limit_per_window - self._used)
        if not self.faults:
            return None
        status, count = self.faults[0]
        self.faults[0] = (status, count - 1)
        if count <= 1:
            self.faults.pop(0)
        if status == 429:
            rate["X-Rate-Limit-Remaining"] = "0"
            return _error(429, "E0000047", "API call exceeded rate limit due to too many requests.", rate)
        return _error(status, "E0000009", "Internal Server Error", rate)

    async def _page(self, request: web.Request, rate: dict[str, str]) -> web.Response:
        q = request.query
        try:
            types = self._types(q.get("filter"))
            limit = int(q.get("limit", "100"))
            since = _time(q.get("since"))
            until = _time(q.get("until"))
        except ValueError as exc:
            return _error(400, "E0000001", f"Api validation failed: {exc}", rate)
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, "E0000001", "Api validation failed: limit", rate)
        descending = q.get("sortOrder", "ASCENDING").upper() == "DESCENDING"
        polling = until is None and not descending
        start = 0
        if "after" in q:
            position = _position(q["after"])
            if position is None:
                return _error(400, "E0000001", "Api validation failed: after", rate)
            start = position
        matching = [
            (i, e) for i, (persisted, e) in enumerate(self.log)
            if i >= start and (types is None or e["eventType"] in types)
            and (since is None or _time(e["published"]) >= since)  # type: ignore[operator]
            and (until is None or _time(e["published"]) < until)  # type: ignore[operator]
        ]  # fmt: skip
        if descending:
            matching.reverse()
        page = matching[:limit]
        more = len(matching) > limit
        headers = dict(rate)
        base = f"{self.url}/api/v1/logs"
        keep = {k: v for k, v in q.items() if k != "after"}
        links = [f'<{base}?{urlencode(q)}>; rel="self"']
        if polling or more:
            # The cursor is past the last event returned, or, for an empty page, where the log ends now.
            after = page[-1][0] + 1 if page else max(start, len(self.log))
            links.append(f'<{base}?{urlencode({**keep, "after": _cursor(after)})}>; rel="next"')
        if self.page_delay_s:
            await asyncio.sleep(self.page_delay_s)
        response = web.json_response([e for _, e in page], headers=headers)
        for link in links:
            response.headers.add("Link", link)
        if page:
            self.pages_with_events += 1
            if self._on_page is not None:
                self._on_page(self.pages_with_events)
        return response

    @staticmethod
    def _types(expression: str | None) -> set[str] | None:
        if expression is None:
            return None
        types = set()
        for clause in re.split(r"\s+or\s+", expression):
            m = _CLAUSE.match(clause)
            if not m:
                raise ValueError(f"unsupported filter {clause[:80]!r}")
            types.add(m.group(1))
        return types


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
