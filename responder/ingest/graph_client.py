"""A small Microsoft Graph client for the pull sources: app-only auth, paging, throttling, size caps.

App-only auth is the OAuth 2.0 client credentials grant against
`{login_url}/{tenant}/oauth2/v2.0/token` with scope `{graph resource}/.default` and either a client secret
or a certificate (a client assertion: a JWT signed with the certificate's key, naming the certificate by
its SHA-256 thumbprint, `x5t#S256`); the token is kept until a minute before it expires. Every call has a
timeout; a response is read up to `max_response_bytes`; 429 and 503 raise `Throttled` with the
`Retry-After` Graph sent (the caller waits that long: it knows whether to retry now or on its next round).
Paging follows `@odata.nextLink` and stops at `@odata.deltaLink`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import SecretStr

Clock = Callable[[], datetime]
DEFAULT_RETRY_AFTER_S = 30.0
MAX_RETRY_AFTER_S = 600.0  # a Retry-After longer than this is read as this: a source must not go silent for a day
TOKEN_MARGIN = timedelta(seconds=60)  # renew before expiry, so no call goes out with a token about to lapse


class GraphError(Exception):
    """A Graph or token call failed: `kind` (a closed set, for `responder_source_errors_total{kind}`) and
    `status` (0 when there was no HTTP answer)."""

    def __init__(self, kind: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def round_failure(exc: Exception, source: str, log: logging.Logger) -> GraphError:
    """What a pull source's failed round counts: a Graph error as it is; anything else (the journal, a bug)
    logged with its traceback and counted as `internal`, so that no error ends the source or the service."""
    if isinstance(exc, GraphError):
        return exc
    log.exception("%s: round failed", source)
    return GraphError("internal", f"{type(exc).__name__}: {exc}")


class Throttled(GraphError):
    """429 or 503: wait `retry_after_s` before the next call."""

    def __init__(self, status: int, retry_after_s: float) -> None:
        super().__init__("rate_limited", f"throttled ({status}); retry after {retry_after_s:g} s", status)
        self.retry_after_s = retry_after_s


class NotFound(GraphError):
    def __init__(self, what: str) -> None:
        super().__init__("not_found", f"{what}: not found", 404)


ERROR_KINDS = frozenset(
    {"auth", "http", "rate_limited", "timeout", "too_large", "bad_response", "not_found", "internal"}
)


def check_url(url: str, name: str) -> str:
    """`url` if it is https, or http to a loopback address (a test's contract server); else ValueError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if parts.scheme == "https" and host:
        return url.rstrip("/")
    if parts.scheme == "http" and loopback:
        return url.rstrip("/")
    raise ValueError(f"{name} must be an https:// URL (plain http only to a loopback address, for tests): {url!r}")


ASSERTION_LIFETIME = timedelta(minutes=10)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate registered on the app, and its private key (RSA: Entra signs and checks RS256)."""

    thumbprint_s256: str  # base64url of the SHA-256 of the certificate's DER
    key: PrivateKeyTypes = field(repr=False)

    @classmethod
    def load(cls, certificate_pem: bytes, key_pem: bytes) -> ClientCertificate:
        """From PEM; ValueError saying which of the two cannot be used."""
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError:
            raise ValueError("the client certificate is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise ValueError("the client certificate's key is not an unencrypted PEM private key") from None
        digest = certificate.fingerprint(hashes.SHA256())
        return cls(base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), key)

    def assertion(self, client_id: str, audience: str, now: datetime) -> str:
        claims = {
            "aud": audience, "iss": client_id, "sub": client_id, "jti": str(uuid.uuid4()),
            "nbf": int(now.timestamp()), "iat": int(now.timestamp()),
            "exp": int((now + ASSERTION_LIFETIME).timestamp()),
        }  # fmt: skip
        headers = {"x5t#S256": self.thumbprint_s256, "typ": "JWT"}
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AppCredentials:
    """An app registration's client credentials: a secret or a certificate. Neither appears in a repr or
    a log line."""

    tenant: str
    client_id: str
    client_secret: SecretStr | None = field(default=None, repr=False)
    certificate: ClientCertificate | None = field(default=None, repr=False)

    def form(self, token_url: str, scope: str, now: datetime) -> dict[str, str]:
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "scope": scope}
        if self.certificate is not None:
            return form | {
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.certificate.assertion(self.client_id, token_url, now),
            }
        if self.client_secret is None:
            raise GraphError("auth", "no client secret and no certificate to ask for a token with")
        return form | {"client_secret": self.client_secret.get_secret_value()}


@dataclass
class _Token:
    value: str
    expires: datetime


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    delta_link: str | None = None


def retry_after(headers: Mapping[str, str]) -> float:
    """Seconds from a `Retry-After` header (seconds only: what Graph sends), bounded; a default without one."""
    try:
        value = float(headers.get("Retry-After", ""))
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


class GraphClient:
    def __init__(
        self,
        credentials: AppCredentials,
        *,
        graph_url: str = "https://graph.microsoft.com/v1.0",
        login_url: str = "https://login.microsoftonline.com",
        timeout_s: float = 10.0,
        max_response_bytes: int = 8 * 1024 * 1024,
        now: Clock,
    ) -> None:
        self._credentials = credentials
        self.graph_url = check_url(graph_url, "graph_url")
        self._login_url = check_url(login_url, "login_url")
        # The token's audience is Graph's resource, without the version path.
        parts = urlsplit(self.graph_url)
        self._scope = f"{parts.scheme}://{parts.netloc}/.default"
        self._timeout_s = timeout_s
        self._max_bytes = max_response_bytes
        self._now = now
        self._token: _Token | None = None
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        return self._session

    async def _token_value(self) -> str:
        if self._token is not None and self._now() < self._token.expires - TOKEN_MARGIN:
            return self._token.value
        url = f"{self._login_url}/{self._credentials.tenant}/oauth2/v2.0/token"
        form = self._credentials.form(url, self._scope, self._now())
        status, body = await self._send("POST", url, data=form)
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            # The token endpoint's own words (error, error_description) name what is wrong; never the secret.
            detail = body.get("error", "") if isinstance(body, dict) else ""
            raise GraphError("auth", f"token request refused ({status} {detail})".strip(), status)
        lifetime = body.get("expires_in", 3599)
        seconds = float(lifetime) if isinstance(lifetime, int | float | str) and str(lifetime).isdigit() else 3599
        self._token = _Token(body["access_token"], self._now() + timedelta(seconds=seconds))
        return self._token.value

    async def _send(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with asyncio.timeout(self._timeout_s), self._http().request(method, url, **kwargs) as response:
                if response.status in (429, 503):
                    raise Throttled(response.status, retry_after(response.headers))
                raw = await response.content.read(self._max_bytes + 1)
                if len(raw) > self._max_bytes:
                    raise GraphError("too_large", f"{method} {_path(url)}: answer over {self._max_bytes} bytes")
                try:
                    body = json.loads(raw) if raw.strip() else None
                except ValueError:
                    raise GraphError(
                        "bad_response", f"{method} {_path(url)}: not JSON ({response.status})", response.status
                    ) from None
                return response.status, body
        except TimeoutError:
            raise GraphError("timeout", f"{method} {_path(url)}: no answer within {self._timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise GraphError("http", f"{method} {_path(url)}: {type(exc).__name__}: {exc}") from None

    async def call(self, method: str, path_or_url: str, body: Mapping[str, Any] | None = None) -> Any:
        """One Graph call, authenticated; its JSON answer (None when empty). 404 raises NotFound, another
        status of 400 or more GraphError naming Graph's `error.code`."""
        # A path is Graph's; a full URL (a next or delta link Graph gave) only if it is under graph_url.
        url = f"{self.graph_url}{path_or_url}" if path_or_url.startswith("/") else path_or_url
        if not url.startswith(f"{self.graph_url}/"):
            raise GraphError("bad_response", f"refusing to follow a link off {self.graph_url}: {_path(url)}")
        headers = {"Authorization": f"Bearer {await self._token_value()}"}
        status, answer = await self._send(method, url, json=body, headers=headers)
        if status == 401:
            self._token = None  # revoked or rotated: the next call fetches a new one
        if status == 404:
            raise NotFound(f"{method} {_path(url)}")
        if status >= 400:
            code = answer.get("error", {}).get("code", "") if isinstance(answer, dict) else ""
            kind = "auth" if status in (401, 403) else "http"
            raise GraphError(kind, f"{method} {_path(url)}: {status} {code}", status)
        return answer

    async def pages(self, path_or_url: str) -> AsyncIterator[Page]:
        """Each page of a collection, following `@odata.nextLink`; the last carries the `@odata.deltaLink`
        of a delta query."""
        url: str | None = path_or_url
        while url is not None:
            answer = await self.call("GET", url)
            if not isinstance(answer, dict) or not isinstance(answer.get("value"), list):
                raise GraphError("bad_response", f"GET {_path(url)}: no value[] in the answer")
            items = [i for i in answer["value"] if isinstance(i, dict)]
            following = answer.get("@odata.nextLink")
            delta = answer.get("@odata.deltaLink")
            url = following if isinstance(following, str) else None
            yield Page(items, delta if isinstance(delta, str) and url is None else None)


def _path(url: str) -> str:
    """A URL without its query: what a log line or an error may name (a delta token is a credential of sorts)."""
    return urlsplit(url).path
