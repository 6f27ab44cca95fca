"""Shared Signals Framework push delivery (RFC 8935) of Security Event Tokens (RFC 8417).

The body is one compact JWS (`application/secevent+jwt`). Its signature is verified against the
transmitter's JWKS (a file, or a URL fetched and cached, re-fetched at most once a minute when an unknown
key id appears), with asymmetric algorithms only; `iss` and `aud` must be the configured ones; `jti`
de-duplicates. Every failure, whatever the header or claims hold, is answered `400` with the RFC's
`{"err", "description"}`. Subjects come from the top-level `sub_id` or, as some transmitters (Okta) send
it, a `subject` inside the event; both use RFC 9493 subject identifiers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
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

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
MAX_JWKS_BYTES = 256 << 10  # a JWKS of a few keys is a few kB
_LEVEL = {"low": Severity.LOW, "medium": Severity.MEDIUM, "high": Severity.HIGH}


class SetError(PayloadError):
    """An RFC 8935 error: `code` is one of the registered error codes."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code


class Keys:
    """The transmitter's signing keys: from a JWKS file, or a JWKS URL fetched and cached.

    A delivery whose key id is known never waits for the network. An unknown key id (the transmitter
    rotated its keys, or someone made one up) starts at most one fetch per `refetch_interval_s`, failed
    or not; deliveries that arrive while it runs share it, and it gives up after `timeout_s`. Between
    fetches an unknown key id is refused from memory, so made-up key ids or a dead or hanging endpoint
    cost one fetch a minute, not one per delivery. Keys older than `ttl_s` are refreshed in the
    background the same way, so a key the transmitter withdrew stops verifying.
    """

    def __init__(
        self,
        *,
        jwks_file: Path | None = None,
        jwks_url: str | None = None,
        ttl_s: float = 3600,
        refetch_interval_s: float = 60,
        timeout_s: float = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (jwks_file is None) == (jwks_url is None):
            raise ValueError("give exactly one of jwks_file and jwks_url")
        self._url = jwks_url
        self._ttl, self._interval, self._timeout = ttl_s, refetch_interval_s, timeout_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last fetch that brought keys
        self._attempted_at: float | None = None  # the last fetch started, whatever came of it
        self._failure = ""  # why the last fetch failed; empty after one that succeeded
        self._fetch: asyncio.Task[None] | None = None
        if jwks_file is not None:
            self._keys = _parse_jwks(json.loads(jwks_file.read_text(encoding="utf-8")))

    async def get(self, kid: str | None) -> jwt.PyJWK:
        key = self._pick(kid)
        if self._url is not None:
            stale = self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl
            if key is None or stale:
                self._start_fetch()
            if key is None and self._fetch is not None:
                # Shielded: a delivery that goes away does not cancel the fetch the others wait for.
                await asyncio.shield(self._fetch)
                key = self._pick(kid)
        if key is None:
            raise SetError("invalid_key", self._unknown(kid))
        return key

    async def close(self) -> None:
        """Stop a fetch still under way (at shutdown)."""
        if self._fetch is not None:
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _start_fetch(self) -> None:
        now = self._clock()
        if self._fetch is not None or (self._attempted_at is not None and now - self._attempted_at < self._interval):
            return
        self._attempted_at = now
        self._fetch = asyncio.create_task(self._download(), name="jwks fetch")

    async def _download(self) -> None:
        assert self._url is not None  # noqa: S101 - only started with a URL
        try:
            async with asyncio.timeout(self._timeout):
                keys = await _fetch_jwks(self._url)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._failure = f"cannot fetch the transmitter's JWKS from {self._url}: {exc or type(exc).__name__}"
            log.warning("%s; next try in %gs at the earliest", self._failure, self._interval)
        else:
            self._keys, self._fetched_at, self._failure = keys, self._clock(), ""
        finally:
            self._fetch = None

    def _unknown(self, kid: str | None) -> str:
        if self._failure:
            return self._failure
        which = f"with kid {kid!r}" if kid is not None else "without a kid (the JWKS has several keys)"
        return f"no signing key {which} in the transmitter's JWKS"


async def _fetch_jwks(url: str) -> dict[str, jwt.PyJWK]:
    # No redirects: the configured URL was checked (https, or http to loopback); a redirect could lead
    # anywhere, e.g. to a cloud metadata address.
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, allow_redirects=False, headers={"Accept": "application/json"}) as response,
    ):
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        body = await response.content.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the JWKS is not JSON") from None
    return _parse_jwks(data)


def _parse_jwks(data: Any) -> dict[str, jwt.PyJWK]:
    try:  # AttributeError: not a JSON object
        keyset = jwt.PyJWKSet.from_dict(data)
    except (jwt.PyJWTError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a usable JWKS: {exc}") from None
    return {k.key_id or f"#{n}": k for n, k in enumerate(keyset.keys)}


@dataclass(frozen=True, slots=True)
class VerifiedSet:
    claims: dict[str, Any]
    events: dict[str, dict[str, Any]]


async def verify(token: str, keys: Keys, *, issuer: str, audience: str) -> VerifiedSet:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:  # not only DecodeError: a bad `crit` or `kid` is an InvalidTokenError
        raise SetError("invalid_request", f"not a usable compact JWS: {exc}") from None
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
