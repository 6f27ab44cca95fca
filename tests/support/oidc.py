"""A test OIDC issuer: its own RSA and EC signing keys, a JWKS and a discovery document served on loopback,
and `mint()` for ID or access tokens with any claims, signed by any key (also wrong ones, for the refusals).

    async with OidcIssuer() as idp:
        token = idp.mint({"email": "alice@example.com", "groups": ["responder-admins"]})

`idp.issuer` is `http://127.0.0.1:PORT/oauth2/default` (an Okta custom authorization server's shape); the
discovery document is at `{issuer}/.well-known/openid-configuration` and the keys at `idp.jwks_url`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "api://default"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class OidcIssuer:
    """The issuer for an `async with` block. `rsa` (kid `rsa-1`) and `ec` (kid `ec-1`, P-256) are published;
    `stranger` is an RSA key that is not."""

    def __init__(self, path: str = "/oauth2/default", audience: str = AUDIENCE) -> None:
        self.path = path.rstrip("/")
        self.audience = audience
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kids: dict[str, PrivateKey] = {"rsa-1": self.rsa, "ec-1": self.ec}
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._runner: web.AppRunner | None = None
        self.base = ""

    @property
    def issuer(self) -> str:
        return f"{self.base}{self.path}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/v1/keys"

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.kids.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "RS256"
            else:
                jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "ES256"
            keys.append(jwk | {"kid": kid, "use": "sig"})
        return {"keys": keys}

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for this issuer and audience, five minutes long, with `overrides` on top."""
        now = int(time.time())
        base = {"iss": self.issuer, "aud": self.audience, "iat": now, "nbf": now, "exp": now + 300}
        return base | {"jti": uuid.uuid4().hex} | overrides

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        key: PrivateKey | bytes | str | None = None,
        alg: str = "RS256",
        kid: str | None = "rsa-1",
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT with `claims` (default: `self.claims()`), by `key` (default: the key of `kid`)."""
        body = dict(claims) if claims is not None else self.claims()
        if key is None:
            key = self.kids.get(kid or "", self.rsa)
        header = dict(headers or {})
        if kid is not None:
            header["kid"] = kid
        return jwt.encode(body, key, algorithm=alg, headers=header)  # type: ignore[arg-type]

    async def __aenter__(self) -> OidcIssuer:
        app = web.Application()
        app.router.add_get(f"{self.path}/.well-known/openid-configuration", self._discovery)
        app.router.add_get(f"{self.path}/v1/keys", self._keys)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _discovery(self, _: web.Request) -> web.Response:
        self.discovery_fetches += 1
        return web.json_response(
            {
                "issuer": self.issuer, "jwks_uri": self.jwks_url,
                "authorization_endpoint": f"{self.issuer}/v1/authorize", "token_endpoint": f"{self.issuer}/v1/token",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        )  # fmt: skip

    async def _keys(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response(self.jwks())
