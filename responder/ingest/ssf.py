"""Shared Signals Framework push delivery (RFC 8935) of Security Event Tokens (RFC 8417).

The body is one compact JWS (`application/secevent+jwt`). Its signature is verified against the
transmitter's JWKS (a file, or a URL fetched and cached, re-fetched when an unknown key id appears), with
asymmetric algorithms only; `iss` and `aud` must be the configured ones; `jti` de-duplicates. Failures are
answered `400` with the RFC's `{"err", "description"}`. Subjects come from the top-level `sub_id` or, as
some transmitters (Okta) send it, a `subject` inside the event; both use RFC 9493 subject identifiers.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from pydantic import ValidationError

from responder.core.events import Event, Severity, Source, Subjects
from responder.core.identifiers import parse_address
from responder.ingest.errors import PayloadError
from responder.ingest.paths import parse_time

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
_LEVEL = {"low": Severity.LOW, "medium": Severity.MEDIUM, "high": Severity.HIGH}


class SetError(PayloadError):
    """An RFC 8935 error: `code` is one of the registered error codes."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code


class Keys:
    """The transmitter's signing keys: from a JWKS file, or a JWKS URL fetched and cached."""

    def __init__(self, *, jwks_file: Path | None = None, jwks_url: str | None = None, ttl_s: float = 3600) -> None:
        if (jwks_file is None) == (jwks_url is None):
            raise ValueError("give exactly one of jwks_file and jwks_url")
        self._url = jwks_url
        self._ttl = ttl_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._lock = asyncio.Lock()
        if jwks_file is not None:
            self._keys = _parse_jwks(json.loads(jwks_file.read_text(encoding="utf-8")))

    async def get(self, kid: str | None) -> jwt.PyJWK:
        key = self._pick(kid)
        if key is None and self._url is not None:
            await self._refresh(force=kid is not None)
            key = self._pick(kid)
        if key is None:
            raise SetError("invalid_key", f"no signing key with kid {kid!r} in the transmitter's JWKS")
        return key

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self, *, force: bool) -> None:
        assert self._url is not None  # noqa: S101 - only called with a URL
        async with self._lock:
            fresh = time.monotonic() - self._fetched < (60 if force else self._ttl)
            if fresh and self._keys:
                return
            timeout = aiohttp.ClientTimeout(total=5)
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self._url) as response:
                    response.raise_for_status()
                    self._keys = _parse_jwks(await response.json(content_type=None))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise SetError("invalid_key", f"cannot fetch the transmitter's JWKS: {exc}") from None
            self._fetched = time.monotonic()


def _parse_jwks(data: Any) -> dict[str, jwt.PyJWK]:
    try:
        keyset = jwt.PyJWKSet.from_dict(data)
    except (jwt.PyJWKSetError, jwt.InvalidKeyError, TypeError, KeyError) as exc:
        raise ValueError(f"not a usable JWKS: {exc}") from None
    return {k.key_id or f"#{n}": k for n, k in enumerate(keyset.keys)}


@dataclass(frozen=True, slots=True)
class VerifiedSet:
    claims: dict[str, Any]
    events: dict[str, dict[str, Any]]


async def verify(token: str, keys: Keys, *, issuer: str, audience: str) -> VerifiedSet:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise SetError("invalid_request", f"not a compact JWS: {exc}") from None
    typ = str(header.get("typ", "")).lower().removeprefix("application/")
    if typ != "secevent+jwt":
        raise SetError("invalid_request", f"JOSE header typ must be secevent+jwt, not {header.get('typ')!r}")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise SetError("invalid_request", f"algorithm {alg!r} is not accepted")
    key = await keys.get(header.get("kid"))
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key=key, algorithms=[alg], audience=audience, issuer=issuer,
            options={"require": ["iss", "iat", "jti", "aud"], "verify_exp": False},
        )  # fmt: skip
    except jwt.InvalidAudienceError:
        raise SetError("invalid_audience", "aud is not this receiver") from None
    except jwt.InvalidIssuerError:
        raise SetError("invalid_issuer", "iss is not the configured transmitter") from None
    except (jwt.InvalidSignatureError, jwt.InvalidKeyError, jwt.InvalidAlgorithmError):
        raise SetError("invalid_key", "the signature does not verify with the transmitter's key") from None
    except jwt.PyJWTError as exc:
        raise SetError("invalid_request", str(exc)) from None
    events = claims.get("events")
    if not isinstance(events, dict) or not events or not all(isinstance(v, dict) for v in events.values()):
        raise SetError("invalid_request", "events must be an object of event-type URI to event object")
    if not isinstance(claims["jti"], str) or not 0 < len(claims["jti"]) <= 256:
        raise SetError("invalid_request", "jti must be a string of 1 to 256 characters")
    return VerifiedSet(claims, events)


def _identifiers(sid: Any, users: list[str], devices: list[str], addresses: list[str], depth: int = 0) -> None:
    if not isinstance(sid, dict) or depth > 4:
        return
    fmt = sid.get("format") or sid.get("subject_type")
    if fmt == "email" and isinstance(sid.get("email"), str):
        users.append(sid["email"])
    elif fmt == "account" and isinstance(sid.get("uri"), str):
        users.append(sid["uri"].removeprefix("acct:"))
    elif fmt == "iss_sub" and isinstance(sid.get("sub"), str) and "@" in sid["sub"]:
        users.append(sid["sub"])
    elif fmt == "ip-addresses" and isinstance(sid.get("ip-addresses"), list):
        addresses.extend(a for a in sid["ip-addresses"] if isinstance(a, str))
    elif fmt == "aliases" and isinstance(sid.get("identifiers"), list):
        for item in sid["identifiers"]:
            _identifiers(item, users, devices, addresses, depth + 1)
    for member in ("user", "device"):  # complex subjects, and Okta's format-less ones
        inner = sid.get(member)
        if isinstance(inner, dict):
            if member == "device" and isinstance(inner.get("id"), str):
                devices.append(inner["id"])
            _identifiers(inner, users, devices, addresses, depth + 1)


def _severity(uri: str, body: dict[str, Any]) -> Severity:
    if uri == CAEP + "risk-level-change":
        return _LEVEL.get(str(body.get("current_level", "")).lower(), Severity.INFO)
    if uri.startswith(RISC):
        return Severity.HIGH
    return Severity.MEDIUM


def events_of(verified: VerifiedSet) -> list[Event]:
    """One canonical event per SET event (normally one); verification events carry none."""
    claims = verified.claims
    out: list[Event] = []
    for uri, body in verified.events.items():
        if uri == VERIFICATION:
            continue
        users: list[str] = []
        devices: list[str] = []
        raw_addresses: list[str] = []
        _identifiers(claims.get("sub_id"), users, devices, raw_addresses)
        _identifiers(body.get("subject"), users, devices, raw_addresses)
        addresses = []
        for a in raw_addresses:
            try:
                addresses.append(parse_address(a))
            except ValueError:
                raise SetError("invalid_request", f"sub_id: {a!r} is not an IP address") from None
        stamp = body.get("event_timestamp", claims.get("iat"))
        fmt = "epoch_ms" if isinstance(stamp, int | float) and stamp > 1e11 else "epoch_s"  # Okta sends ms
        attributes = {**body, "_set": {k: claims.get(k) for k in ("iss", "jti", "txn", "sub_id")}}
        try:
            out.append(
                Event(
                    id=f"{claims['jti']}#{uri.rsplit('/', 1)[-1]}"[:256],
                    source=Source.SSF,
                    product=str(claims["iss"])[:128],
                    type=uri[:512],
                    time=parse_time(stamp, fmt, field="event_timestamp"),
                    subjects=Subjects(users=tuple(users), devices=tuple(devices), addresses=tuple(addresses)),
                    severity=_severity(uri, body),
                    attributes=attributes,
                    dedup_key=f"ssf:{claims['iss']}:{claims['jti']}:{uri}"[:512],
                )
            )
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(map(str, e["loc"]))
            raise SetError("invalid_request", f"{where}: {e['msg']}" if where else e["msg"]) from None
        except PayloadError as exc:
            raise SetError("invalid_request", str(exc)) from None
    return out
