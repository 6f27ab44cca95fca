"""A contract server for the Microsoft identity platform token endpoint and the Microsoft Graph APIs the
responder pulls from: NOT Graph.

Written from Microsoft's documentation:
- client credentials grant: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
  (form POST to /{tenant}/oauth2/v2.0/token; `access_token`, `expires_in`; errors `invalid_client`, ...),
  with a secret or a certificate credential:
  https://learn.microsoft.com/entra/identity-platform/certificate-credentials (`client_assertion`, an RS256
  JWT with `aud` the token URL, `iss` = `sub` = the client id, `exp`, `jti`, and `x5t#S256` in its header)
- subscriptions: https://learn.microsoft.com/graph/api/resources/subscription (maximum lifetime of a
  users or groups subscription 41,760 minutes; an expired one is deleted), subscription-post-subscriptions
  (the notification and lifecycle URLs are validated first: Graph POSTs `?validationToken=...` and wants
  it back as text/plain within 10 s, else 400), subscription-update (PATCH expirationDateTime),
  subscription-reauthorize, and https://learn.microsoft.com/graph/change-notifications-lifecycle-events
  (`reauthorizationRequired`, `subscriptionRemoved`, `missed`, delivered to lifecycleNotificationUrl)
- change notifications for users: https://learn.microsoft.com/graph/change-notifications-delivery-webhooks
  (`value[]` of `subscriptionId`, `changeType`, `resource` "Users/{id}", `resourceData` with only the id,
  `clientState`, `tenantId`)
- users delta: https://learn.microsoft.com/graph/api/user-delta (`@odata.nextLink` pages, a final
  `@odata.deltaLink`; a deleted user as `{"id", "@removed": {"reason": "changed"}}`)
- deleted items: https://learn.microsoft.com/graph/api/directory-deleteditems-get (a soft-deleted user's
  `userPrincipalName` gets its id, without dashes, in front)
- riskDetections and riskyUsers lists: https://learn.microsoft.com/graph/api/riskdetection-list,
  riskyuser-list (`$filter` on `detectedDateTime` / `riskLastUpdatedDateTime` with `ge`, `$top`, paging)
- throttling: https://learn.microsoft.com/graph/throttling (429 with `Retry-After` in seconds)
- errors: https://learn.microsoft.com/graph/errors (`{"error": {"code", "message"}}`).

Time is the test's (`now`), so a month passes in a second. Tests steer it with `add_user`, `disable_user`,
`delete_user` (each sends the change notification Graph would, unless `notify=False`), `lifecycle(...)`,
`add_detection`, `add_risky_user`, and `fail(...)` for 429s; `requests` records what arrived.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes

Json = dict[str, Any]
MAX_MINUTES = 41_760  # users and groups
VALIDATION_TIMEOUT_S = 10.0
_FILTER = re.compile(r"^(\w+) ge (\S+)$")


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@dataclass
class Subscription:
    id: str
    resource: str
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime

    def json(self) -> Json:
        return {
            "id": self.id, "resource": self.resource, "changeType": self.change_type,
            "notificationUrl": self.notification_url, "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _iso(self.expires),
        }  # fmt: skip


@dataclass
class User:
    id: str
    upn: str
    enabled: bool = True
    deleted: bool = False
    version: int = 0  # when it last changed, for delta

    def json(self) -> Json:
        return {"id": self.id, "userPrincipalName": self.upn, "mail": self.upn, "accountEnabled": self.enabled}


@dataclass
class Seen:
    method: str
    path: str
    query: str
    status: int


@dataclass
class GraphContract:
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    tenant: str = "contoso-tenant"
    client_id: str = "responder-app"
    client_secret: str = "client-secret-of-the-contract-app"
    certificate_pem: bytes | None = None  # registered on the app: client assertions signed by its key
    page_size: int = 2
    token_lifetime_s: int = 3599
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    detections: list[Json] = field(default_factory=list)
    risky_users: list[Json] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    validated: list[str] = field(default_factory=list)  # URLs that answered the validation handshake
    notifications_sent: list[tuple[str, Json, int]] = field(default_factory=list)  # url, body, status
    _tokens: dict[str, datetime] = field(default_factory=dict)
    _faults: list[tuple[int, int, str, str]] = field(default_factory=list)  # status, count, retry_after, path
    _holds: list[tuple[str, asyncio.Event, asyncio.Event]] = field(default_factory=list)  # query, arrived, release
    _version: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    url: str = ""

    # --- lifetime ---------------------------------------------------------------------------------------

    async def start(self) -> GraphContract:
        app = web.Application(middlewares=[self._recorded])
        app.add_routes([
            web.post("/{tenant}/oauth2/v2.0/token", self._token),
            web.post("/v1.0/subscriptions", self._create),
            web.get("/v1.0/subscriptions/{id}", self._get_subscription),
            web.patch("/v1.0/subscriptions/{id}", self._update),
            web.delete("/v1.0/subscriptions/{id}", self._delete),
            web.post("/v1.0/subscriptions/{id}/reauthorize", self._reauthorize),
            web.get("/v1.0/users/delta", self._delta),
            web.get("/v1.0/users/{id}", self._user),
            web.get("/v1.0/directory/deletedItems/{id}", self._deleted_item),
            web.get("/v1.0/identityProtection/riskDetections", self._risk_detections),
            web.get("/v1.0/identityProtection/riskyUsers", self._risky_users),
        ])  # fmt: skip
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def graph_url(self) -> str:
        return f"{self.url}/v1.0"

    # --- knobs ------------------------------------------------------------------------------------------

    def fail(self, status: int, count: int = 1, *, retry_after: str = "1", path_contains: str = "") -> None:
        """The next `count` Graph calls whose path contains `path_contains` get `status` (429, 503)."""
        self._faults.append((status, count, retry_after, path_contains))

    def hold(self, query_contains: str) -> tuple[asyncio.Event, asyncio.Event]:
        """Requests whose query contains `query_contains` wait, unanswered: `arrived` is set when one is
        there, and it is answered once the test sets `release` (a crash mid-page)."""
        arrived, release = asyncio.Event(), asyncio.Event()
        self._holds.append((query_contains, arrived, release))
        return arrived, release

    def add_user(self, upn: str) -> str:
        user = User(str(uuid.uuid4()), upn, version=next(self._version))
        self.users[user.id] = user
        return user.id

    async def disable_user(self, user_id: str, *, notify: bool = True) -> None:
        await self._change(user_id, notify, enabled=False)

    async def enable_user(self, user_id: str, *, notify: bool = True) -> None:
        await self._change(user_id, notify, enabled=True)

    async def delete_user(self, user_id: str, *, notify: bool = True) -> None:
        await self._change(user_id, notify, deleted=True)

    async def _change(self, user_id: str, notify: bool, **fields: bool) -> None:
        user = self.users[user_id]
        for name, value in fields.items():
            setattr(user, name, value)
        user.version = next(self._version)
        if not notify:
            return
        change = "deleted" if user.deleted else "updated"
        for sub in self._live("users"):
            record = {
                "subscriptionId": sub.id, "subscriptionExpirationDateTime": _iso(sub.expires),
                "changeType": change, "resource": f"Users/{user_id}", "clientState": sub.client_state,
                "tenantId": self.tenant,
                "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{user_id}",
                                 "id": user_id, "organizationId": self.tenant},
            }  # fmt: skip
            await self._post(sub.notification_url, {"value": [record]})

    async def lifecycle(self, subscription_id: str, event: str) -> int:
        """Send a lifecycle notification as Graph does; `subscriptionRemoved` removes the subscription first."""
        sub = self.subscriptions[subscription_id]
        if event == "subscriptionRemoved":
            del self.subscriptions[subscription_id]
        record = {
            "subscriptionId": sub.id, "subscriptionExpirationDateTime": _iso(sub.expires),
            "lifecycleEvent": event, "clientState": sub.client_state, "tenantId": self.tenant,
        }  # fmt: skip
        return await self._post(sub.lifecycle_url or sub.notification_url, {"value": [record]})

    def add_detection(
        self, user: str, kind: str = "leakedCredentials", level: str = "high", at: datetime | None = None
    ) -> Json:
        when = _iso(at or self.now())
        detection = {
            "id": uuid.uuid4().hex, "riskEventType": kind, "riskLevel": level, "riskState": "atRisk",
            "riskDetail": "none", "detectionTimingType": "offline", "activity": "user",
            "userPrincipalName": user, "userId": str(uuid.uuid4()), "detectedDateTime": when,
            "activityDateTime": when, "lastUpdatedDateTime": when,
        }  # fmt: skip
        self.detections.append(detection)
        return detection

    def add_risky_user(self, user: str, level: str = "high", at: datetime | None = None) -> Json:
        risky = {
            "id": str(uuid.uuid4()), "userPrincipalName": user, "riskLevel": level, "riskState": "atRisk",
            "riskDetail": "none", "riskLastUpdatedDateTime": _iso(at or self.now()), "isDeleted": False,
        }  # fmt: skip
        self.risky_users.append(risky)
        return risky

    def _live(self, resource: str) -> list[Subscription]:
        self._expire()
        return [s for s in self.subscriptions.values() if s.resource.strip("/").lower() == resource]

    def _expire(self) -> None:
        """Graph deletes a subscription that has expired."""
        for sub_id, sub in list(self.subscriptions.items()):
            if sub.expires <= self.now():
                del self.subscriptions[sub_id]

    async def _post(self, url: str, body: Json) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=3)) as r,
        ):
            self.notifications_sent.append((url, body, r.status))
            return r.status

    # --- HTTP -------------------------------------------------------------------------------------------

    @web.middleware
    async def _recorded(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        response: web.StreamResponse
        for query, arrived, release in self._holds:
            if query in request.query_string:
                arrived.set()
                await release.wait()
        fault = next((f for f in self._faults if f[3] in request.path and request.path.startswith("/v1.0")), None)
        if fault is not None:
            status, count, retry_after, path = fault
            self._faults.remove(fault)
            if count > 1:
                self._faults.insert(0, (status, count - 1, retry_after, path))
            response = _error(status, "TooManyRequests" if status == 429 else "ServiceUnavailable",
                              "throttled", {"Retry-After": retry_after})  # fmt: skip
        elif request.path.startswith("/v1.0") and not self._authorized(request):
            response = _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        else:
            response = await handler(request)
        self.requests.append(Seen(request.method, request.path, request.query_string, response.status))
        return response

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        expires = self._tokens.get(token)
        return expires is not None and expires > self.now()

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if request.match_info["tenant"] != self.tenant:
            return web.json_response(
                {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."}, status=400
            )
        if form.get("grant_type") != "client_credentials" or not str(form.get("scope", "")).endswith("/.default"):
            return web.json_response({"error": "invalid_request", "error_description": "AADSTS1002012"}, status=400)
        if "client_assertion" in form:
            if not self._assertion_valid(
                request, str(form.get("client_assertion_type")), str(form["client_assertion"])
            ):
                refused = "AADSTS700027: Client assertion failed signature validation."
                return web.json_response({"error": "invalid_client", "error_description": refused}, status=401)
        elif form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."},
                status=401,
            )
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self.now() + timedelta(seconds=self.token_lifetime_s)
        return web.json_response({"token_type": "Bearer", "expires_in": self.token_lifetime_s, "access_token": token})

    def _assertion_valid(self, request: web.Request, kind: str, assertion: str) -> bool:
        if self.certificate_pem is None or kind != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return False
        certificate = x509.load_pem_x509_certificate(self.certificate_pem)
        thumbprint = base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
        try:
            if jwt.get_unverified_header(assertion).get("x5t#S256") != thumbprint:
                return False
            claims = jwt.decode(
                assertion, certificate.public_key(), algorithms=["RS256"], audience=str(request.url),  # type: ignore[arg-type]
                options={"require": ["exp", "aud", "iss", "sub", "jti"]},
            )  # fmt: skip
        except jwt.PyJWTError:
            return False
        return claims["iss"] == claims["sub"] == self.client_id

    def _lifetime_error(self, resource: str, expires: datetime) -> web.Response | None:
        limit = self.now() + timedelta(minutes=MAX_MINUTES)
        if resource.strip("/").lower() in ("users", "groups") and expires > limit + timedelta(minutes=1):
            return _error(
                400, "ExtensionError", f"Subscription expiration can only be {MAX_MINUTES} minutes from creation."
            )
        if expires <= self.now():
            return _error(400, "InvalidRequest", "expirationDateTime must be in the future.")
        return None

    async def _validate(self, url: str) -> bool:
        token = secrets.token_urlsafe(16)
        try:
            async with aiohttp.ClientSession() as http, http.post(
                url, params={"validationToken": token}, headers={"Content-Type": "text/plain"},
                timeout=aiohttp.ClientTimeout(total=VALIDATION_TIMEOUT_S),
            ) as r:  # fmt: skip
                ok = r.status == 200 and (await r.text()) == token and r.content_type == "text/plain"
        except (aiohttp.ClientError, TimeoutError):
            return False
        if ok:
            self.validated.append(url)
        return ok

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not body.get(name):
                return _error(400, "InvalidRequest", f"{name} is required.")
        if len(body.get("clientState") or "") > 128:
            return _error(400, "InvalidRequest", "clientState must be at most 128 characters.")
        expires = _time(body["expirationDateTime"])
        if (problem := self._lifetime_error(body["resource"], expires)) is not None:
            return problem
        for url in filter(None, (body["notificationUrl"], body.get("lifecycleNotificationUrl"))):
            if not await self._validate(url):
                return _error(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK.",
                )
        sub = Subscription(str(uuid.uuid4()), body["resource"], body["changeType"], body["notificationUrl"],
                           body.get("lifecycleNotificationUrl"), body.get("clientState"), expires)  # fmt: skip
        self.subscriptions[sub.id] = sub
        return web.json_response(sub.json(), status=201)

    def _found(self, request: web.Request) -> Subscription | None:
        self._expire()
        return self.subscriptions.get(request.match_info["id"])

    async def _get_subscription(self, request: web.Request) -> web.Response:
        if (sub := self._found(request)) is None:
            return _error(404, "ResourceNotFound", "The object was not found.")
        return web.json_response(sub.json())

    async def _update(self, request: web.Request) -> web.Response:
        if (sub := self._found(request)) is None:
            return _error(404, "ResourceNotFound", "The object was not found.")
        expires = _time((await request.json())["expirationDateTime"])
        if (problem := self._lifetime_error(sub.resource, expires)) is not None:
            return problem
        sub.expires = expires
        return web.json_response(sub.json())

    async def _delete(self, request: web.Request) -> web.Response:
        if self._found(request) is None:
            return _error(404, "ResourceNotFound", "The object was not found.")
        del self.subscriptions[request.match_info["id"]]
        return web.Response(status=204)

    async def _reauthorize(self, request: web.Request) -> web.Response:
        if self._found(request) is None:
            return _error(404, "ResourceNotFound", "The object was not found.")
        return web.Response(status=204)

    async def _user(self, request: web.Request) -> web.Response:
        user = self.users.get(request.match_info["id"])
        if user is None or user.deleted:
            return _error(404, "Request_ResourceNotFound", f"Resource '{request.match_info['id']}' does not exist.")
        return web.json_response(user.json())

    async def _deleted_item(self, request: web.Request) -> web.Response:
        user = self.users.get(request.match_info["id"])
        if user is None or not user.deleted:
            return _error(404, "Request_ResourceNotFound", f"Resource '{request.match_info['id']}' does not exist.")
        return web.json_response(user.json() | {"userPrincipalName": user.id.replace("-", "") + user.upn})

    def _page(
        self, request: web.Request, items: list[Json], final: Json, carried: dict[str, str] | None = None
    ) -> web.Response:
        skip = int(request.query.get("$skiptoken", "0"))
        size = min(int(request.query.get("$top", self.page_size)), 999)
        body: Json = {"value": items[skip : skip + size]}
        if skip + size < len(items):
            query = {k: v for k, v in request.query.items() if k != "$skiptoken"} | (carried or {})
            query["$skiptoken"] = str(skip + size)
            body["@odata.nextLink"] = str(request.url.with_query(query))
        else:
            body |= final
        return web.json_response(body)

    async def _delta(self, request: web.Request) -> web.Response:
        # A round's end is fixed by its first page (the next links carry it), as Graph's state token is.
        latest = int(request.query.get("$round", max((u.version for u in self.users.values()), default=0)))
        if "$deltatoken" not in request.query:
            users = [u for u in self.users.values() if not u.deleted]  # the first round: what is there
        else:
            since = int(request.query["$deltatoken"])
            users = [u for u in self.users.values() if since < u.version <= latest]
        items = [{"id": u.id, "@removed": {"reason": "changed"}} if u.deleted else u.json() for u in users]
        link = request.url.with_query({"$deltatoken": str(latest)})
        return self._page(request, items, {"@odata.deltaLink": str(link)}, {"$round": str(latest)})

    def _filtered(self, request: web.Request, items: list[Json], field_name: str) -> list[Json] | web.Response:
        expression = request.query.get("$filter")
        if expression is None:
            return items
        match = _FILTER.match(expression.strip())
        if match is None or match.group(1) != field_name:
            return _error(400, "BadRequest", f"Invalid filter clause: {expression}")
        since = _time(match.group(2))
        return [i for i in items if _time(i[field_name]) >= since]

    async def _risk_detections(self, request: web.Request) -> web.Response:
        found = self._filtered(request, self.detections, "detectedDateTime")
        return found if isinstance(found, web.Response) else self._page(request, found, {})

    async def _risky_users(self, request: web.Request) -> web.Response:
        found = self._filtered(request, self.risky_users, "riskLastUpdatedDateTime")
        return found if isinstance(found, web.Response) else self._page(request, found, {})


async def running_contract(**options: Any) -> GraphContract:
    """A started contract server; the caller stops it."""
    return await GraphContract(**options).start()
