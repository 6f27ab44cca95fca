"""A Shared Signals transmitter made per replay run: its signing key, its JWKS, and the SETs it signs."""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class Transmitter:
    def __init__(self, kid: str = "replay-1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def sign(self, claims: Any, *, typ: str = "secevent+jwt", kid: str | None = None) -> str:
        """Signed at the JWS layer: the claims go out exactly as given, also ones PyJWT would refuse."""
        body = json.dumps(claims).encode()
        return jwt.api_jws.PyJWS().encode(
            body, self.key, algorithm="RS256", headers={"typ": typ, "kid": kid or self.kid}
        )
