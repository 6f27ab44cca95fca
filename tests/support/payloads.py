"""Example payloads written to the documented shapes (tests/payloads/), and a Shared Signals transmitter
key for signing SETs in tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads"


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def raw(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


class Transmitter:
    """A Shared Signals transmitter's signing key, its JWKS, and SETs signed with it."""

    def __init__(self, kid: str = "tx-1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def sign(self, claims: Any, *, typ: str = "secevent+jwt", kid: str | None = None) -> str:
        """Sign at the JWS layer, so that tests can send any claims, also ones PyJWT would refuse to make."""
        body = json.dumps(claims).encode()
        return jwt.api_jws.PyJWS().encode(
            body, self.key, algorithm="RS256", headers={"typ": typ, "kid": kid or self.kid}
        )
