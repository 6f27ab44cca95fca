"""Shared Signals push under attack, against the real service over HTTP: hostile JOSE headers get an
RFC 8935 400 (never a 500), and a JWKS endpoint that fails, hangs or is asked about made-up key ids is
fetched at most once per interval, by one fetch that the waiting deliveries share, with a short timeout.
The JWKS is served by a real local HTTP server that counts its fetches and can fail or hang."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from responder.config import Settings, Ssf
from tests.support.payloads import Transmitter, payload
from tests.support.service import no_hubs, running

ISSUER, AUDIENCE = "https://idp.partner.example", "https://soar.acme.example/ssf/push"
SET_HEADERS = {"Content-Type": "application/secevent+jwt"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: Any, claims: Any, key: rsa.RSAPrivateKey | None) -> str:
    """A compact JWS with exactly this header (any JSON, also what PyJWT refuses to write), RS256-signed
    with `key`, or with an empty signature without one."""
    return raw_jws(json.dumps(header).encode(), json.dumps(claims).encode(), key)


def raw_jws(header: bytes, claims: bytes, key: rsa.RSAPrivateKey | None) -> str:
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()) if key else b""
    return f"{signing_input}.{_b64(signature)}"


class JwksServer:
    """A transmitter's JWKS endpoint on loopback: `mode` says how it answers; `fetches` counts requests."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.mode = "ok"
        self.fetches = 0
        self.redirect_target_hits = 0
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.fetches += 1
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "error":
            return web.Response(status=503, text="down")
        if self.mode == "not json":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if self.mode == "huge":
            return web.json_response({"keys": self.jwks["keys"], "pad": "x" * (2 << 20)})
        if self.mode == "redirect":
            raise web.HTTPFound(f"{self.url}-elsewhere")
        return web.json_response(self.jwks)

    async def elsewhere(self, request: web.Request) -> web.StreamResponse:
        self.redirect_target_hits += 1
        return web.json_response(self.jwks)


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer(Transmitter().jwks())
    app = web.Application()
    app.add_routes([web.get("/jwks", server.handle), web.get("/jwks-elsewhere", server.elsewhere)])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/jwks"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


def _settings(tmp_path: Path, ssf: Ssf) -> Settings:
    return Settings(journal=f"sqlite:///{tmp_path}/journal.db", ssf=ssf, inventory=no_hubs(tmp_path))


async def _post(base: str, token: str, timeout: float = 30) -> tuple[int, Any, float]:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
        http.post(f"{base}/hooks/ssf", data=token, headers=SET_HEADERS) as r,
    ):
        body = await r.json(content_type=None) if r.status != 202 else None
        return r.status, body, time.monotonic() - started


CLAIMS = payload("ssf/session_revoked.json")


# --- hostile JOSE headers ------------------------------------------------------------------------


@pytest.fixture
async def file_keyed(tmp_path: Path) -> AsyncIterator[tuple[str, Transmitter]]:
    tx = Transmitter()
    (tmp_path / "jwks.json").write_text(json.dumps(tx.jwks()))
    ssf = Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp_path / "jwks.json")
    async with running(_settings(tmp_path, ssf)) as (_, base):
        yield base, tx


GOOD_HEADER = {"alg": "RS256", "typ": "secevent+jwt", "kid": "tx-1"}


@pytest.mark.parametrize(
    ("case", "header", "signed"),
    [
        ("unsigned, unknown crit", {"alg": "none", "typ": "secevent+jwt", "crit": ["x"]}, False),
        ("signed, unknown crit", {**GOOD_HEADER, "crit": ["x"], "x": 1}, True),
        ("crit not a list", {**GOOD_HEADER, "crit": "x"}, True),
        ("crit empty", {**GOOD_HEADER, "crit": []}, True),
        ("crit of numbers", {**GOOD_HEADER, "crit": [1]}, True),
        ("b64 false", {**GOOD_HEADER, "b64": False, "crit": ["b64"]}, True),
        ("kid a number", {**GOOD_HEADER, "kid": 7}, True),
        ("kid an object", {**GOOD_HEADER, "kid": {"a": 1}}, True),
        ("alg none", {"alg": "none", "typ": "secevent+jwt", "kid": "tx-1"}, False),
        ("alg HS256", {**GOOD_HEADER, "alg": "HS256"}, True),
        ("alg a list", {**GOOD_HEADER, "alg": ["RS256"]}, True),
        ("alg ES256 on an RSA key", {**GOOD_HEADER, "alg": "ES256"}, True),
        ("typ a number", {**GOOD_HEADER, "typ": 5}, True),
        ("header a list", ["RS256"], True),
        ("header a string", "RS256", True),
        ("header null", None, True),
    ],
)
async def test_hostile_jose_headers_get_an_rfc_8935_400(
    file_keyed: tuple[str, Transmitter], case: str, header: Any, signed: bool
) -> None:
    base, tx = file_keyed
    status, body, _ = await _post(base, jws(header, CLAIMS, tx.key if signed else None))
    assert status == 400, (case, body)
    assert set(body) == {"err", "description"} and body["err"] in {"invalid_request", "invalid_key"}, body


GOOD = json.dumps(GOOD_HEADER).encode()


@pytest.mark.parametrize(
    ("case", "header", "claims"),
    [
        ("header not JSON", b"{nope", json.dumps(CLAIMS).encode()),
        ("header nested deep", b"[" * 5000 + b"]" * 5000, json.dumps(CLAIMS).encode()),
        ("claims not JSON", GOOD, b"{nope"),
        ("claims nested deep", GOOD, b'{"a":' * 5000 + b"1" + b"}" * 5000),
        ("claims a list", GOOD, json.dumps([CLAIMS]).encode()),
        ("iat a string", GOOD, json.dumps({**CLAIMS, "iat": "yesterday"}).encode()),
        ("events a list", GOOD, json.dumps({**CLAIMS, "events": [1, 2]}).encode()),
        ("jti a number", GOOD, json.dumps({**CLAIMS, "jti": 12}).encode()),
        ("aud a list of numbers", GOOD, json.dumps({**CLAIMS, "aud": [1, 2]}).encode()),
        ("iss a list", GOOD, json.dumps({**CLAIMS, "iss": [ISSUER]}).encode()),
    ],
)
async def test_malformed_sets_get_an_rfc_8935_400(
    file_keyed: tuple[str, Transmitter], case: str, header: bytes, claims: bytes
) -> None:
    base, tx = file_keyed
    status, body, _ = await _post(base, raw_jws(header, claims, tx.key))
    assert status == 400, (case, body)
    assert set(body) == {"err", "description"}, body


async def test_a_body_that_is_no_jws_at_all_gets_an_rfc_8935_400(file_keyed: tuple[str, Transmitter]) -> None:
    base, _ = file_keyed
    for token in ("!!!.e30.", "a.b", "", "\u00e9t\u00e9"):
        status, body, _ = await _post(base, token)
        assert status == 400 and set(body) == {"err", "description"}, (token, body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
header_names = st.sampled_from(["alg", "typ", "kid", "crit", "b64", "cty", "jku", "x5u", "zip", "x"]) | st.text(
    max_size=4
)


@st.composite
def headers(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    header: dict[str, Any] = dict(GOOD_HEADER)
    for _ in range(draw(st.integers(1, 4))):
        name = draw(header_names)
        if draw(st.booleans()) and name in header:
            del header[name]
        elif name == "crit" and draw(st.booleans()):
            header[name] = draw(st.lists(header_names | json_values, max_size=3))
        else:
            header[name] = draw(st.sampled_from(["RS256", "none", "secevent+jwt", "tx-1"]) | json_values)
    return header


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, str, Transmitter]]:
    tmp = tmp_path_factory.mktemp("ssf-fuzz")
    tx = Transmitter()
    (tmp / "jwks.json").write_text(json.dumps(tx.jwks()))
    loop = asyncio.new_event_loop()
    context = running(_settings(tmp, Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp / "jwks.json")))
    _, base = loop.run_until_complete(context.__aenter__())
    try:
        yield loop, base, tx
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(header=headers(), signed=st.booleans())
def test_any_jose_header_gets_a_202_or_an_rfc_8935_400(
    fuzzed: tuple[asyncio.AbstractEventLoop, str, Transmitter], header: Any, signed: bool
) -> None:
    loop, base, tx = fuzzed
    status, body, _ = loop.run_until_complete(_post(base, jws(header, CLAIMS, tx.key if signed else None), 10))
    assert status in {202, 400}, (header, body)
    if status == 400:
        assert set(body) == {"err", "description"}, body


# --- fetching the transmitter's keys --------------------------------------------------------------


@pytest.fixture
async def url_keyed(tmp_path: Path, jwks_server: JwksServer) -> AsyncIterator[tuple[str, JwksServer, Transmitter]]:
    tx = Transmitter()
    jwks_server.jwks = tx.jwks()
    ssf = Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_server.url)
    async with running(_settings(tmp_path, ssf)) as (_, base):
        yield base, jwks_server, tx


@pytest.mark.parametrize("mode", ["ok", "error", "not json", "huge", "redirect"])
async def test_made_up_key_ids_cost_one_jwks_fetch_not_one_per_delivery(
    url_keyed: tuple[str, JwksServer, Transmitter], mode: str
) -> None:
    base, server, _ = url_keyed
    server.mode = mode
    for n in range(10):
        status, body, _ = await _post(base, Transmitter(kid=f"made-up-{n}").sign(CLAIMS))
        assert (status, body["err"]) == (400, "invalid_key"), body
    assert server.fetches == 1
    assert server.redirect_target_hits == 0  # a redirect is not followed


async def test_a_failed_jwks_fetch_is_named_in_the_answer(url_keyed: tuple[str, JwksServer, Transmitter]) -> None:
    base, server, tx = url_keyed
    server.mode = "error"
    status, body, _ = await _post(base, tx.sign(CLAIMS))
    assert (status, body["err"]) == (400, "invalid_key")
    assert "HTTP 503" in body["description"] and server.url in body["description"]


async def test_a_hanging_jwks_endpoint_holds_deliveries_one_timeout_at_most(
    url_keyed: tuple[str, JwksServer, Transmitter],
) -> None:
    base, server, tx = url_keyed
    server.mode = "hang"
    started = time.monotonic()
    answers = await asyncio.gather(*(_post(base, tx.sign({**CLAIMS, "jti": f"j{n}"})) for n in range(10)))
    took = time.monotonic() - started
    assert [(s, b["err"]) for s, b, _ in answers] == [(400, "invalid_key")] * 10
    assert server.fetches == 1  # one fetch, shared by all ten
    assert took < 5 + 2.5, f"ten deliveries took {took:.1f}s against a 5s fetch timeout"
    # Within the refetch interval the next delivery is answered from memory, without a fetch.
    status, body, elapsed = await _post(base, tx.sign(CLAIMS))
    assert (status, body["err"], server.fetches) == (400, "invalid_key", 1)
    assert elapsed < 1


async def test_known_key_ids_never_wait_for_a_fetch(tmp_path: Path, jwks_server: JwksServer) -> None:
    tx = Transmitter()
    jwks_server.jwks = tx.jwks()
    ssf = Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_server.url, jwks_refetch_interval_s=0.1)
    async with running(_settings(tmp_path, ssf)) as (_, base):
        assert (await _post(base, tx.sign(CLAIMS)))[0] == 202
        jwks_server.mode = "hang"
        await asyncio.sleep(0.2)
        rogue = asyncio.create_task(_post(base, Transmitter(kid="rotated").sign(CLAIMS)))
        await asyncio.sleep(0.2)  # the rogue delivery's fetch is hanging now
        status, _, elapsed = await _post(base, tx.sign({**CLAIMS, "jti": "another"}))
        assert status == 202 and elapsed < 1 and not rogue.done()
        assert (await rogue)[0] == 400
    assert jwks_server.fetches == 2


# --- where the keys may come from -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://idp.partner.example/jwks",
        "https://169.254.169.254/jwks",
        "https://[fe80::1]/jwks",
        "file:///etc/passwd",
        "idp.partner.example/jwks",
    ],
)
def test_jwks_url_must_be_https(url: str) -> None:
    with pytest.raises(ValidationError, match="jwks_url must"):
        Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_url=url)


@pytest.mark.parametrize(
    "url", ["https://idp.partner.example/.well-known/jwks.json", "http://127.0.0.1:8443/jwks", "http://[::1]/j"]
)
def test_jwks_url_https_or_loopback_http_is_accepted(url: str) -> None:
    assert Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_url=url).jwks_url == url
