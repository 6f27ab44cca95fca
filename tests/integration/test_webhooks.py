"""The webhook routes over real HTTP on loopback, each handshake and each failure path, with the events
landing in a real SQLite journal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from responder.config import Settings, Ssf
from responder.journal import Journal
from tests.support.payloads import Transmitter, payload, raw
from tests.support.service import event_bodies, event_keys, no_hubs, serving

OKTA_SECRET = "Basic b2t0YTpzZWNyZXQtdmFsdWU="
CLIENT_STATE = "CLIENT-STATE-PLACEHOLDER"
ISSUER, AUDIENCE = "https://idp.partner.example", "https://soar.acme.example/ssf/push"
SSF_AUTH = "Bearer ssf-push-token"


@pytest.fixture
def transmitter() -> Transmitter:
    return Transmitter()


@pytest.fixture
async def service(tmp_path: Path, transmitter: Transmitter) -> AsyncIterator[tuple[str, Journal]]:
    (tmp_path / "jwks.json").write_text(json.dumps(transmitter.jwks()))
    url = f"sqlite:///{tmp_path}/journal.db"
    s = Settings(
        journal=url,
        okta_secret=OKTA_SECRET,
        entra_client_state=CLIENT_STATE,
        ssf=Ssf(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp_path / "jwks.json"),
        ssf_authorization=SSF_AUTH,
        admin_token="admin-token-for-tests",
        inventory=no_hubs(tmp_path),
    )
    async with serving(s) as served:
        yield served


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _pending(journal: Journal) -> list[str]:
    """Every event the journal accepted (the service may have decided on them already)."""
    return await event_keys(journal)


OKTA_HEADERS = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}


async def test_okta_verification_challenge(service: tuple[str, Journal], http: aiohttp.ClientSession) -> None:
    base, _ = service
    headers = {"X-Okta-Verification-Challenge": "c5a1d3e9f0", "Authorization": OKTA_SECRET}
    async with http.get(f"{base}/hooks/okta", headers=headers) as r:
        assert r.status == 200 and await r.json() == {"verification": "c5a1d3e9f0"}
    async with http.get(f"{base}/hooks/okta", headers={"Authorization": OKTA_SECRET}) as r:
        assert r.status == 400 and "Challenge" in (await r.json())["error"]
    async with http.get(f"{base}/hooks/okta", headers={**headers, "Authorization": "Basic wrong"}) as r:
        assert r.status == 401


async def test_okta_batch_is_split_and_redeliveries_are_recognised(
    service: tuple[str, Journal], http: aiohttp.ClientSession
) -> None:
    base, journal = service
    async with http.post(f"{base}/hooks/okta", data=raw("okta/batch.json"), headers=OKTA_HEADERS) as r:
        assert r.status == 200
    keys = await _pending(journal)
    assert keys == [f"okta:c1d2e3f4-1a2b-11f1-9c3d-00000000000{n}" for n in (1, 2, 3)]
    # Okta's retry: the same delivery again; then one of its events inside another delivery.
    async with http.post(f"{base}/hooks/okta", data=raw("okta/batch.json"), headers=OKTA_HEADERS) as r:
        assert r.status == 200
    other = payload("okta/batch.json")
    other["eventId"] = "another-delivery"
    async with http.post(f"{base}/hooks/okta", json=other, headers={"Authorization": OKTA_SECRET}) as r:
        assert r.status == 200
    assert await _pending(journal) == keys
    async with http.get(f"{base}/metrics", headers={"Authorization": "Bearer admin-token-for-tests"}) as r:
        text = await r.text()
    assert 'responder_duplicate_events_total{source="okta"} 6.0' in text
    assert 'responder_events_total{source="okta"} 3.0' in text


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({"Authorization": "Basic nope", "Content-Type": "application/json"}, b"{}", 401, "authentication"),
        ({"Content-Type": "application/json"}, b"{}", 401, "authentication"),
        ({"Authorization": OKTA_SECRET, "Content-Type": "text/plain"}, b"{}", 415, "application/json"),
        (OKTA_HEADERS, b"{not json", 400, "not valid JSON"),
        (OKTA_HEADERS, b'{"data": {}}', 400, "data.events: Field required"),
        (OKTA_HEADERS, b"x" * (2 << 20), 413, "body over"),
    ],
)
async def test_okta_bad_deliveries_get_a_clear_4xx_and_store_nothing(
    service: tuple[str, Journal],
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    body: bytes,
    status: int,
    message: str,
) -> None:
    base, journal = service
    async with http.post(f"{base}/hooks/okta", data=body, headers=headers) as r:
        assert r.status == status
        assert message in (await r.json())["error"]
    assert await _pending(journal) == []


async def test_okta_one_bad_event_does_not_cost_the_rest_of_the_batch(
    service: tuple[str, Journal], http: aiohttp.ClientSession
) -> None:
    base, journal = service
    body = payload("okta/batch.json")
    body["data"]["events"][1]["published"] = "yesterday"  # without one, the delivery's eventTime would do
    async with http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r:
        assert r.status == 200
    assert await _pending(journal) == [f"okta:c1d2e3f4-1a2b-11f1-9c3d-00000000000{n}" for n in (1, 3)]


@pytest.mark.parametrize("path", ["/hooks/entra", "/hooks/entra/lifecycle"])
async def test_graph_validation_token_is_echoed_as_plain_text(
    service: tuple[str, Journal], http: aiohttp.ClientSession, path: str
) -> None:
    base, _ = service
    token = "Validation: Testing client application reachability <script>"
    async with http.post(f"{base}{path}", params={"validationToken": token}, data=b"") as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        assert await r.text() == token


async def test_graph_notifications_need_the_client_state(
    service: tuple[str, Journal], http: aiohttp.ClientSession
) -> None:
    base, journal = service
    genuine = payload("entra/notification.json")
    async with http.post(f"{base}/hooks/entra", json=genuine) as r:
        assert r.status == 202
    assert await _pending(journal) == ["entra:notification:lsgTZMr9KwAAA"]

    forged = payload("entra/notification.json")
    forged["value"][0] |= {"clientState": "guessed", "id": "forged-1"}
    async with http.post(f"{base}/hooks/entra", json=forged) as r:
        assert r.status == 401
    mixed = {"value": [forged["value"][0], {**genuine["value"][0], "id": "second"}]}
    async with http.post(f"{base}/hooks/entra", json=mixed) as r:
        assert r.status == 202
    assert await _pending(journal) == ["entra:notification:lsgTZMr9KwAAA", "entra:notification:second"]


async def test_graph_lifecycle_notification_is_accepted_and_counted(
    service: tuple[str, Journal], http: aiohttp.ClientSession
) -> None:
    base, journal = service
    async with http.post(f"{base}/hooks/entra/lifecycle", json=payload("entra/lifecycle.json")) as r:
        assert r.status == 202
    (event,) = await event_bodies(journal)
    assert event["type"] == "graph.lifecycle.subscriptionRemoved"
    async with http.get(f"{base}/metrics", headers={"Authorization": "Bearer admin-token-for-tests"}) as r:
        assert 'responder_graph_lifecycle_notifications_total{event="subscriptionRemoved"} 1.0' in await r.text()


SET_HEADERS = {"Content-Type": "application/secevent+jwt", "Authorization": SSF_AUTH}


async def test_ssf_push_accepts_a_signed_set_once(
    service: tuple[str, Journal], http: aiohttp.ClientSession, transmitter: Transmitter
) -> None:
    base, journal = service
    token = transmitter.sign(payload("ssf/session_revoked.json"))
    for _ in range(2):
        async with http.post(f"{base}/hooks/ssf", data=token, headers=SET_HEADERS) as r:
            assert r.status == 202
            assert await r.read() == b""
    (key,) = await event_keys(journal)
    assert key.startswith("ssf:https://idp.partner.example:9f3a1c0e7b2d4e6f:")


@pytest.mark.parametrize(
    ("case", "status", "err"),
    [
        ("other key", 400, "invalid_key"),
        ("other audience", 400, "invalid_audience"),
        ("other issuer", 400, "invalid_issuer"),
        ("not a JWS", 400, "invalid_request"),
        ("wrong content type", 400, "invalid_request"),
        ("wrong authorization", 401, "authentication_failed"),
    ],
)
async def test_ssf_push_errors_follow_rfc_8935(
    service: tuple[str, Journal], http: aiohttp.ClientSession, transmitter: Transmitter, case: str, status: int,
    err: str,
) -> None:  # fmt: skip
    base, journal = service
    claims = payload("ssf/session_revoked.json")
    headers = dict(SET_HEADERS)
    token = transmitter.sign(claims)
    if case == "other key":
        token = Transmitter().sign(claims)
    elif case == "other audience":
        token = transmitter.sign({**claims, "aud": "https://elsewhere.example"})
    elif case == "other issuer":
        token = transmitter.sign({**claims, "iss": "https://evil.example"})
    elif case == "not a JWS":
        token = "hello.world"
    elif case == "wrong content type":
        headers["Content-Type"] = "application/json"
    elif case == "wrong authorization":
        headers["Authorization"] = "Bearer guessed"
    async with http.post(f"{base}/hooks/ssf", data=token, headers=headers) as r:
        assert r.status == status
        body = await r.json()
    assert body["err"] == err and body["description"]
    assert await event_keys(journal) == []


async def test_unknown_routes_and_methods_answer_json(
    service: tuple[str, Journal], http: aiohttp.ClientSession
) -> None:
    base, _ = service
    async with http.get(f"{base}/hooks/nothing") as r:
        assert r.status == 404 and "error" in await r.json()
    async with http.put(f"{base}/hooks/okta") as r:
        assert r.status == 405 and "error" in await r.json()


async def test_each_refused_delivery_is_answered_and_counted_once_under_its_outcome(
    service: tuple[str, Journal], http: aiohttp.ClientSession
) -> None:
    base, journal = service
    async with http.post(f"{base}/hooks/okta", data=b"{not json", headers=OKTA_HEADERS) as r:
        assert r.status == 400 and (await r.json())["error"].startswith("the body is")
    async with http.post(f"{base}/hooks/okta", data=b'{"data": {}}', headers=OKTA_HEADERS) as r:
        assert r.status == 400
    forged = payload("entra/notification.json")
    forged["value"][0] |= {"clientState": "guessed"}
    async with http.post(f"{base}/hooks/entra", json=forged) as r:
        assert r.status == 401 and await r.json() == {"error": "clientState does not match"}
    big = {**SET_HEADERS, "Content-Length": str(2 << 20)}
    async with http.post(f"{base}/hooks/ssf", data=b"x" * (2 << 20), headers=big) as r:
        # Refused before the body is read: a plain JSON error, as for every source.
        assert r.status == 413 and "body over" in (await r.json())["error"]
    async with http.get(f"{base}/metrics", headers={"Authorization": "Bearer admin-token-for-tests"}) as r:
        counted = {
            line.split(" ")[0]: line.split(" ")[1]
            for line in (await r.text()).splitlines()
            if line.startswith("responder_deliveries_total{")
        }
    assert counted == {
        'responder_deliveries_total{outcome="bad_json",source="okta"}': "1.0",
        'responder_deliveries_total{outcome="invalid",source="okta"}': "1.0",
        'responder_deliveries_total{outcome="client_state_mismatch",source="entra"}': "1.0",
        'responder_deliveries_total{outcome="too_large",source="ssf"}': "1.0",
    }
    assert await event_keys(journal) == []
