"""Mutated payloads, thousands per source, at every webhook route of the running service and at the Kafka
consumer's parser: every one gets a 2xx or a 4xx (never a 5xx, never a hang), and the parser either makes
events or says why not (never another exception, which would stall a partition)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responder.config import Settings, Ssf
from responder.ingest.errors import PayloadError
from responder.ingest.kafka import parse
from responder.ingest.siem import load_connectors
from tests.support.payloads import Transmitter, payload
from tests.support.service import no_hubs, running

EXAMPLES = 1000
CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"
SECRET, STATE = "okta-fuzz-secret", "CLIENT-STATE-PLACEHOLDER"
ISSUER, AUDIENCE = "https://idp.partner.example", "https://soar.acme.example/ssf/push"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            return draw(json_values)
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


def bodies(base: Any) -> st.SearchStrategy[bytes]:
    valid = json.dumps(base).encode()
    return st.one_of(
        mutated(base).map(lambda d: json.dumps(d).encode()),
        st.integers(0, len(valid)).map(lambda n: valid[:n]),
        st.binary(max_size=300),
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, str, Transmitter]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    tx = Transmitter()
    (tmp / "jwks.json").write_text(json.dumps(tx.jwks()))
    s = Settings(
        journal=f"sqlite:///{tmp}/journal.db",
        okta_secret=SECRET,
        entra_client_state=STATE,
        ssf=Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp / "jwks.json"),
        inventory=no_hubs(tmp),
    )
    loop = asyncio.new_event_loop()
    context = running(s)
    _, base = loop.run_until_complete(context.__aenter__())
    session = loop.run_until_complete(_session())
    try:
        yield loop, base, tx
    finally:
        loop.run_until_complete(session.close())
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def _post(loop: asyncio.AbstractEventLoop, url: str, body: bytes, headers: dict[str, str]) -> int:
    async def go() -> int:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.post(url, data=body, headers=headers) as r,
        ):
            await r.read()
            return r.status

    return loop.run_until_complete(go())


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@FUZZ
@given(body=bodies(payload("okta/batch.json")))
def test_okta_route(service: tuple[asyncio.AbstractEventLoop, str, Transmitter], body: bytes) -> None:
    loop, base, _ = service
    status = _post(loop, f"{base}/hooks/okta", body, {"Authorization": SECRET, "Content-Type": "application/json"})
    assert status in {200, 400, 413}


@FUZZ
@given(body=bodies(payload("entra/notification.json")), lifecycle=st.booleans())
def test_entra_routes(
    service: tuple[asyncio.AbstractEventLoop, str, Transmitter], body: bytes, lifecycle: bool
) -> None:
    loop, base, _ = service
    path = "/hooks/entra/lifecycle" if lifecycle else "/hooks/entra"
    status = _post(loop, f"{base}{path}", body, {"Content-Type": "application/json"})
    assert status in {202, 400, 401}


@FUZZ
@given(claims=mutated(payload("ssf/session_revoked.json")), garbage=st.binary(max_size=200), signed=st.booleans())
def test_ssf_route(
    service: tuple[asyncio.AbstractEventLoop, str, Transmitter], claims: Any, garbage: bytes, signed: bool
) -> None:
    loop, base, tx = service
    body = tx.sign(claims).encode() if signed else garbage
    status = _post(loop, f"{base}/hooks/ssf", body, {"Content-Type": "application/secevent+jwt"})
    assert status in {202, 400}


FORMATS = load_connectors(CONNECTORS)
SAMPLES = {
    "wazuh": "siem/wazuh.json",
    "elastic": "siem/elastic.json",
    "ocsf": "siem/ocsf.json",
    "splunk": "siem/splunk.json",
    "entra": "entra/eventhubs.json",
}


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_consumer_parser(fmt: str) -> None:
    @settings(max_examples=2 * EXAMPLES, deadline=None, database=None)
    @given(body=bodies(payload(SAMPLES[fmt])))
    def check(body: bytes) -> None:
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            topic="t", partition=0, offset=0, timestamp=0, timestamp_type=0, key=None, value=body,
            checksum=None, serialized_key_size=0, serialized_value_size=len(body), headers=(),
        )  # fmt: skip
        try:
            events = parse(record, FORMATS[fmt])
        except PayloadError as exc:
            assert str(exc)
        else:
            assert all(e.dedup_key for e in events)

    check()
