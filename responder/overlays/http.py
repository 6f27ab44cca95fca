"""One aiohttp session per overlay endpoint: timeouts, retries with backoff, Retry-After, token refresh.

Retried: connection errors, timeouts, 429 and 5xx (the server's `Retry-After` wins over our backoff). Never
retried: other 4xx, except one 401 after a refreshable credential (OAuth token, session cookie) was renewed.
A 403 is a refusal, not an auth failure: NetBird answers 403 for "cannot block the owner". A 404 is returned
to the caller only where it asked (`missing_ok`): the reference says that 404 on a repeated delete means
done. Secrets go into headers only; no message built here contains a header.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
from pydantic import SecretStr

from responder.overlays.errors import (
    OverlayAuthError,
    OverlayNotFound,
    OverlayRefused,
    OverlayUnavailable,
)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    connect_timeout: float = 5.0
    request_timeout: float = 15.0
    retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    retry_after_max: float = 60.0
    """A longer Retry-After is capped: a response action must not stall for minutes behind one call."""
    rmw_attempts: int = 3
    """Read-modify-write attempts before a concurrent modification is reported."""
    token_refresh_margin_s: float = 300.0
    """Refresh an OAuth token this long before it expires (Tailscale tokens live one hour)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


class Credential(Protocol):
    """Supplies the auth headers; `refreshable` says whether a 401 is worth one renewal and retry."""

    refreshable: bool

    async def headers(self, http: OverlayHttp) -> dict[str, str]: ...
    def invalidate(self) -> None: ...


class StaticToken:
    refreshable = False

    def __init__(self, scheme: str, secret: SecretStr) -> None:
        self._scheme = scheme
        self._secret = secret

    async def headers(self, http: OverlayHttp) -> dict[str, str]:
        return {"Authorization": f"{self._scheme} {self._secret.get_secret_value()}"}

    def invalidate(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticToken({self._scheme} **********)"


class OAuthClientCredentials:
    """OAuth 2 client-credentials grant; the access token is renewed before it expires or after a 401."""

    refreshable = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        margin_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._margin = margin_s
        self._clock = clock
        self._token: SecretStr | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def headers(self, http: OverlayHttp) -> dict[str, str]:
        async with self._lock:  # one refresh, however many requests notice the expiry at once
            if self._token is None or self._clock() >= self._expires_at - self._margin:
                await self._fetch(http)
            assert self._token is not None  # noqa: S101 - _fetch sets it or raises
            return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    async def _fetch(self, http: OverlayHttp) -> None:
        form = {
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "grant_type": "client_credentials",
        }
        reply = await http.request("POST", self._token_url, form=form, authenticated=False)
        body = reply.body if isinstance(reply.body, dict) else {}
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise OverlayAuthError(http.overlay, "the OAuth token endpoint answered without an access_token")
        expires_in = body.get("expires_in", 3600)
        self._token = SecretStr(token)
        self._expires_at = self._clock() + float(expires_in if isinstance(expires_in, int | float) else 3600)

    def invalidate(self) -> None:
        self._token = None


class SessionLogin:
    """DefGuard without a Business licence: `POST /api/v1/auth` sets a session cookie in the session's jar."""

    refreshable = True

    def __init__(self, path: str, username: str, password: SecretStr) -> None:
        self._path = path
        self._username = username
        self._password = password
        self._logged_in = False
        self._lock = asyncio.Lock()

    async def headers(self, http: OverlayHttp) -> dict[str, str]:
        async with self._lock:
            if not self._logged_in:
                body = {"username": self._username, "password": self._password.get_secret_value()}
                await http.request("POST", self._path, json_body=body, authenticated=False)
                self._logged_in = True
        return {}

    def invalidate(self) -> None:
        self._logged_in = False


def _message(text: str) -> str:
    """The error text an overlay sent: Tailscale/NetBird `message`, DefGuard `msg`, else the raw body."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:200] or "(empty body)"
    if isinstance(body, dict):
        for key in ("message", "msg", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:200]
    return text.strip()[:200]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OverlayHttp:
    """The one HTTP session of one overlay endpoint; owned and closed by its adapter."""

    def __init__(self, overlay: str, base_url: str, credential: Credential, settings: HttpSettings) -> None:
        self.overlay = overlay
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, as aiohttp requires.
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout, connect=self.settings.connect_timeout)
            # unsafe=True keeps cookies from IP-address hosts (self-hosted DefGuard by address).
            self._session = aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.CookieJar(unsafe=True))
        return self._session

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.settings.backoff_max, self.settings.backoff_base * 2**attempt)
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - jitter, not cryptography

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
        authenticated: bool = True,
    ) -> Reply:
        """Send one request with retries; 2xx (and 404 if `missing_ok`) come back, the rest raise."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        what = f"{method} {path}"
        attempt = 0
        renewed = False
        while True:
            headers = {"Accept": "application/json"}
            if authenticated:
                headers |= await self.credential.headers(self)
            try:
                async with (
                    asyncio.timeout(self.settings.request_timeout),
                    self._client().request(
                        method, url, json=json_body, data=form, params=params, headers=headers, allow_redirects=False
                    ) as resp,
                ):
                    status, text, reply_headers = resp.status, await resp.text(), dict(resp.headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.settings.retries:
                    raise OverlayUnavailable(self.overlay, f"{what}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            if status == 401 and authenticated and self.credential.refreshable and not renewed:
                self.credential.invalidate()
                renewed = True
                continue
            delay = self._check(
                what, status, text, missing_ok=missing_ok, attempt=attempt, retry_after=reply_headers.get("Retry-After")
            )
            if delay is not None:
                await asyncio.sleep(delay)
                attempt += 1
                continue
            if status == 404:
                return Reply(status, None, reply_headers)
            try:
                body = json.loads(text) if text.strip() else None
            except ValueError as exc:
                raise OverlayRefused(self.overlay, status, f"{what}: {status} with a body that is not JSON") from exc
            return Reply(status, body, reply_headers)

    def _check(
        self, what: str, status: int, text: str, *, missing_ok: bool, attempt: int, retry_after: str | None
    ) -> float | None:
        """Raise for a final failure; return a delay to retry after; None when the reply is the answer."""
        if status == 401:
            raise OverlayAuthError(self.overlay, f"{what}: 401 {_message(text)} (check the token or OAuth client)")
        if status == 403:
            # Either the token lacks a scope or the target is protected (the account owner, oneself).
            raise OverlayRefused(self.overlay, 403, f"{what}: 403 {_message(text)} (token scope or a protected target)")
        if status == 404 and not missing_ok:
            raise OverlayNotFound(self.overlay, f"{what}: 404 {_message(text)}")
        if status == 429 or status >= 500:
            if attempt >= self.settings.retries:
                raise OverlayUnavailable(self.overlay, f"{what}: {status} {_message(text)} after {attempt + 1} tries")
            delay = _retry_after(retry_after)
            return min(self.settings.retry_after_max, delay if delay is not None else self._backoff(attempt))
        if status >= 300 and status != 404:  # redirects are not followed: a token must not travel elsewhere
            raise OverlayRefused(self.overlay, status, f"{what}: {status} {_message(text)}")
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
