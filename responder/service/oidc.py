"""Operators' bearer tokens from the organisation's IdP (Okta, Entra ID), verified against its published keys.

A JWT in `Authorization: Bearer` is verified here: signed with an asymmetric algorithm the configuration
allows (RS256, ES256; never `none` or an HMAC, which would let anyone holding the public key sign), by a
key of the IdP's JWKS (fetched as the SSF receiver fetches its transmitter's: https only, no redirects,
a size cap, a timeout, at most one fetch a minute for unknown key ids), with the configured `iss` and
`aud`, and `exp`/`nbf`/`iat` within a small leeway. The operator's id is the first of the configured claim,
`preferred_username`, `upn` and `sub` that is a string; the role is the highest one that a value of the role
claim (`roles`: Entra app roles; `groups`: Okta groups) is mapped to. A valid token with no mapped role is
refused with 403, naming the claim that was read.

Without a configured `jwks_url` the keys' address comes from `{issuer}/.well-known/openid-configuration`
(its `issuer` must be the configured one; its `jwks_uri` must be https, or http to loopback).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import aiohttp
import jwt
from aiohttp import web

from responder.config import OperatorsOidc, Ssf
from responder.ingest.ssf import Keys, SetError
from responder.service.operators import NoRole, Operator, Refused, Role

log = logging.getLogger(__name__)

ID_FALLBACKS = ("preferred_username", "upn", "sub")  # Entra ID tokens, Entra v1 access tokens, Okta access tokens
MAX_DISCOVERY_BYTES = 64 << 10  # Okta's and Entra's documents are 2-6 kB
MAX_ID_CHARS = 256


def looks_like_jwt(credential: str) -> bool:
    """Three dot-separated parts, the signature perhaps empty (`alg: none`, refused here with the reason):
    a JWS in compact form, which another authenticator's token never is."""
    header, payload, _ = [*credential.split("."), "", ""][:3]
    return credential.count(".") == 2 and bool(header) and bool(payload)


class OidcBearer:
    """An `Authenticator` for the IdP's bearer tokens (see the module docstring). `close()` at shutdown."""

    def __init__(self, config: OperatorsOidc, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._roles = _role_table(config.roles)
        self._keys: Keys | None = None
        if config.jwks_url is not None:
            self._keys = self._keys_at(config.jwks_url)
        self._discovery = asyncio.Lock()  # one discovery at a time; the others wait for its outcome
        self._discovered_at: float | None = None  # the last discovery attempt
        self._discovery_failure = ""

    async def authenticate(self, request: web.Request) -> Operator | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = given.strip()
        if scheme.lower() != "bearer" or not looks_like_jwt(token):
            return None
        return self.operator(await self.claims(token))

    async def claims(self, token: str) -> dict[str, Any]:
        """The token's verified claims; `Refused` with the reason when it does not verify."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Refused(f"not a usable bearer JWT: {exc}") from None
        alg = header.get("alg")
        if alg not in self._config.algorithms:
            shown = repr(alg)[:40]  # the sender's text: bounded in the answer
            raise Refused(f"algorithm {shown} is not accepted: use one of {list(self._config.algorithms)}")
        keys = await self._key_set()
        try:
            key = await keys.get(header.get("kid"))
        except SetError as exc:
            raise Refused(str(exc)) from None
        if key.algorithm_name != alg:
            raise Refused(f"the key {repr(header.get('kid'))[:80]} is not a {alg} key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=[alg], audience=self._config.audience, issuer=self._config.issuer,
                leeway=self._config.leeway_s, options={"require": ["iss", "aud", "exp", "iat"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise Refused("the bearer token has expired: sign in again") from None
        except jwt.ImmatureSignatureError:
            raise Refused("the bearer token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Refused(f"the bearer token's aud is not {self._config.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise Refused(f"the bearer token's iss is not {self._config.issuer!r}") from None
        except (jwt.InvalidSignatureError, jwt.InvalidKeyError, jwt.InvalidAlgorithmError):
            raise Refused("the bearer token's signature does not verify with the IdP's key") from None
        except jwt.PyJWTError as exc:
            raise Refused(f"the bearer token is not valid: {exc}") from None
        return claims

    def operator(self, claims: Mapping[str, Any]) -> Operator:
        """The operator these verified claims name; `NoRole` when none of the role claim's values is mapped."""
        claim_names = (self._config.id_claim, *(c for c in ID_FALLBACKS if c != self._config.id_claim))
        operator_id = next(
            (v for c in claim_names if isinstance(v := claims.get(c), str) and 0 < len(v) <= MAX_ID_CHARS), None
        )
        if operator_id is None:
            raise Refused(f"the bearer token names nobody: none of {list(claim_names)} is a string")
        values = claims.get(self._config.role_claim)
        granted = [self._roles[v] for v in _strings(values) if v in self._roles]
        if not granted:
            raise NoRole(
                f"{operator_id} has no role here: the token's {self._config.role_claim!r} claim "
                f"({_shown(values)}) has none of the values mapped to admin, approver or viewer"
            )
        return Operator(operator_id, max(granted), "oidc")

    async def close(self) -> None:
        if self._keys is not None:
            await self._keys.close()

    def _keys_at(self, url: str) -> Keys:
        c = self._config
        return Keys(
            jwks_url=url, refetch_interval_s=c.jwks_refetch_interval_s, timeout_s=c.jwks_timeout_s, clock=self._clock
        )

    async def _key_set(self) -> Keys:
        if self._keys is not None:
            return self._keys
        async with self._discovery:
            if self._keys is not None:
                return self._keys
            now = self._clock()
            if self._discovered_at is not None and now - self._discovered_at < self._config.jwks_refetch_interval_s:
                raise Refused(self._discovery_failure)
            self._discovered_at = now
            try:
                async with asyncio.timeout(self._config.jwks_timeout_s):
                    jwks_uri = await _discover(self._config.issuer)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self._discovery_failure = (
                    f"cannot read the IdP's discovery document at {_discovery_url(self._config.issuer)}: "
                    f"{exc or type(exc).__name__}"
                )
                log.warning(
                    "%s; next try in %gs at the earliest", self._discovery_failure, self._config.jwks_refetch_interval_s
                )
                raise Refused(self._discovery_failure) from None
            self._keys = self._keys_at(jwks_uri)
            return self._keys


def _discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


async def _discover(issuer: str) -> str:
    """The IdP's `jwks_uri`, from its discovery document (no redirects, capped, checked)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(_discovery_url(issuer), allow_redirects=False, headers={"Accept": "application/json"}) as r,
    ):
        if r.status != 200:
            raise ValueError(f"HTTP {r.status}")
        body = await r.content.read(MAX_DISCOVERY_BYTES + 1)
    if len(body) > MAX_DISCOVERY_BYTES:
        raise ValueError(f"the document is over {MAX_DISCOVERY_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the document is not JSON") from None
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise ValueError(f"its issuer is not {issuer!r}")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise ValueError("it has no jwks_uri")  # noqa: TRY004 - the caller reports a ValueError as unusable
    checked = Ssf._https_or_loopback(jwks_uri)  # the same rule as a configured URL
    assert checked is not None  # noqa: S101 - a str in, a str out
    return checked


def _role_table(roles: Mapping[Literal["admin", "approver", "viewer"], Sequence[str]]) -> dict[str, Role]:
    """Claim value → role; the highest wins where a value is listed under several. Without a mapping the
    values are the role names themselves (an Entra app role named `approver`, an Okta group `admin`)."""
    if not roles:
        return {r.name.lower(): r for r in Role}
    table: dict[str, Role] = {}
    for name, values in roles.items():
        role = Role.parse(name)
        for value in values:
            table[value] = max(table.get(value, role), role)
    return table


def _strings(values: object) -> list[str]:
    if isinstance(values, str):  # a single group or role, as some IdPs send it
        return [values]
    if isinstance(values, list):
        return [v for v in values if isinstance(v, str)]
    return []


def _shown(values: object) -> str:
    if values is None:
        return "absent"
    text = json.dumps(values)
    return text if len(text) <= 200 else text[:197] + "..."
