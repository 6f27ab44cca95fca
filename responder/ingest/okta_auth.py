"""Credentials for Okta's management APIs: an API token, or an OAuth service app's access token.

An API token is sent as `Authorization: SSWS <token>`. A service app (https://developer.okta.com/docs/guides/
implement-oauth-for-okta-serviceapp/) authenticates with `private_key_jwt`: a client assertion signed with
its private key, posted to `{org}/oauth2/v1/token` for the client-credentials grant with the scopes it was
granted (`okta.logs.read` for the System Log); the access token it gets back is sent as `Bearer` and kept
until shortly before it expires. DPoP is not used: the app's "Require Demonstrating Proof of Possession"
setting must be off (a token request that Okta answers `invalid_dpop_proof` says so).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import SecretStr

TOKEN_PATH = "/oauth2/v1/token"  # noqa: S105 - a path, not a secret
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 300  # Okta accepts at most an hour; a short one is worth less if it leaks
RENEW_BEFORE_S = 60.0


class CredentialsRefused(Exception):
    """Okta refused the credentials (the token endpoint's `error`, or a 401/403): what to change."""


class TokenEndpointBusy(Exception):
    """The token endpoint answered 429 or 5xx: try again later; `wait_s` from its rate-limit reset."""

    def __init__(self, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class OktaCredentials(Protocol):
    async def authorization(self, http: aiohttp.ClientSession) -> str:
        """The `Authorization` header value for the next request."""
        ...

    def refused(self) -> None:
        """The last header was refused (401): a cached access token is dropped, a fresh one tried next."""
        ...


@dataclass(frozen=True)
class ApiToken:
    token: SecretStr = field(repr=False)

    async def authorization(self, http: aiohttp.ClientSession) -> str:
        return f"SSWS {self.token.get_secret_value()}"

    def refused(self) -> None:
        return None


def check_private_key(pem: str) -> str:
    """The signing algorithm for a service app's PEM private key (RS256 or ES256), or ValueError."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("is not an unencrypted PEM private key") from None
    if isinstance(key, EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"is an EC key on {key.curve.name}: Okta takes P-256 (ES256) or RSA")
        return "ES256"
    if getattr(key, "key_size", 0) < 2048:
        raise ValueError("is too weak: use RSA of at least 2048 bits or EC P-256")
    return "RS256"


class ServiceApp:
    """Access tokens for an OAuth service app (`private_key_jwt` client credentials), cached until a minute
    before they expire."""

    def __init__(
        self,
        org_url: str,
        client_id: str,
        private_key: SecretStr,
        *,
        key_id: str | None = None,
        scopes: tuple[str, ...] = ("okta.logs.read",),
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = f"{org_url.rstrip('/')}{TOKEN_PATH}"
        self.client_id = client_id
        self._key = private_key
        self._algorithm = check_private_key(private_key.get_secret_value())
        self._key_id = key_id
        self.scopes = scopes
        self._timeout_s = timeout_s
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.issued = 0  # tokens obtained, for tests and logs

    def __repr__(self) -> str:
        return f"ServiceApp(client_id={self.client_id!r}, scopes={self.scopes!r})"

    async def authorization(self, http: aiohttp.ClientSession) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at - RENEW_BEFORE_S:
                self._token, lifetime = await self._request(http)
                self._expires_at = self._clock() + lifetime
                self.issued += 1
            return f"Bearer {self._token}"

    def refused(self) -> None:
        self._token = None

    def assertion(self) -> str:
        now = int(self._clock())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "iat": now,
                  "exp": now + ASSERTION_LIFETIME_S, "jti": uuid.uuid4().hex}  # fmt: skip
        headers = {"kid": self._key_id} if self._key_id else None
        return jwt.encode(claims, self._key.get_secret_value(), algorithm=self._algorithm, headers=headers)

    async def _request(self, http: aiohttp.ClientSession) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "scope": " ".join(self.scopes),
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion()}  # fmt: skip
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                http.post(self.token_url, data=form, headers={"Accept": "application/json"}) as r,
            ):
                body: Any = await r.json(content_type=None) if r.content_length != 0 else {}
                status, reset = r.status, r.headers.get("X-Rate-Limit-Reset")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise TokenEndpointBusy(f"token endpoint: {type(exc).__name__}: {exc or 'timed out'}") from None
        body = body if isinstance(body, dict) else {}
        if status == 429 or status >= 500:
            wait = float(reset) - self._clock() if reset and reset.isdigit() else None
            raise TokenEndpointBusy(f"token endpoint answered {status}", wait)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if status != 200 or not isinstance(token, str) or not isinstance(lifetime, int | float):
            raise CredentialsRefused(self._why(status, body))
        return token, float(lifetime)

    def _why(self, status: int, body: dict[str, Any]) -> str:
        error = str(body.get("error", ""))[:64]
        said = f"{status} {error}: {str(body.get('error_description', ''))[:200]}".rstrip(": ")
        if error == "invalid_dpop_proof":
            return f"{said} (turn off 'Require Demonstrating Proof of Possession' for service app {self.client_id})"
        if error == "invalid_scope":
            return f"{said} (grant {' '.join(self.scopes)} to service app {self.client_id})"
        return f"{said} (check client_id {self.client_id} and that Okta has the app's public key)"
