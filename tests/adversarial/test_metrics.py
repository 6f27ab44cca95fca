"""/metrics against a sender who makes up label values, and against an unauthenticated reader: label values
that come from input are bounded to known sets, and the peers' keys and traffic are not open to anyone who
can reach the webhooks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from responder.config import Settings
from tests.support.service import no_hubs, running

TOKEN = "admin-token-for-metrics"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIENT_STATE = "client-state-for-metrics"
SUBSCRIPTION = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"


def _settings(tmp_path: Path, **values: object) -> Settings:
    base: dict[str, object] = {
        "journal": f"sqlite:///{tmp_path}/journal.db", "inventory": no_hubs(tmp_path),
        "entra_client_state": CLIENT_STATE, "admin_token": TOKEN,
    }  # fmt: skip
    return Settings(**{**base, **values})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def _lifecycle(event: str, n: int) -> dict[str, object]:
    return {
        "id": f"made-up-{n}", "subscriptionId": SUBSCRIPTION, "clientState": CLIENT_STATE,
        "lifecycleEvent": event, "resource": "users",
    }  # fmt: skip


async def test_made_up_lifecycle_events_count_as_other_and_add_no_series(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running(_settings(tmp_path)) as (_, base):
        async with http.get(f"{base}/metrics", headers=AUTH) as r:
            before = len((await r.text()).splitlines())
        made_up = [f"attacker-value-{n:04d}-{'x' * 200}" for n in range(400)]
        for start in range(0, len(made_up), 100):
            batch = [_lifecycle(e, start + i) for i, e in enumerate(made_up[start : start + 100])]
            async with http.post(f"{base}/hooks/entra/lifecycle", json={"value": batch}) as r:
                assert r.status == 202
        async with http.post(f"{base}/hooks/entra/lifecycle", json={"value": [_lifecycle("missed", 999)]}) as r:
            assert r.status == 202
        async with http.get(f"{base}/metrics", headers=AUTH) as r:
            text = await r.text()
    assert "attacker-value" not in text
    assert 'responder_graph_lifecycle_notifications_total{event="other"} 400.0' in text
    assert 'responder_graph_lifecycle_notifications_total{event="missed"} 1.0' in text
    # New series only for what is new (the delivery, events and hand-off histogram of entra, two events);
    # nothing grows with the number of made-up values.
    assert len(text.splitlines()) < before + 100  # with 400 series it would be 800 more


async def test_metrics_on_the_main_listener_need_the_admin_token(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running(_settings(tmp_path)) as (_, base):
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 401 and "bearer" in (await r.json())["error"]
        async with http.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with http.get(f"{base}/metrics", headers=AUTH) as r:
            assert r.status == 200 and "responder_deliveries_total" in await r.text()
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200


async def test_metrics_without_an_admin_token_are_not_served_open(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running(_settings(tmp_path, admin_token=None)) as (_, base), http.get(f"{base}/metrics") as r:
        assert r.status == 503 and "RESPONDER_ADMIN_TOKEN" in (await r.json())["error"]


async def test_metrics_on_their_own_listener_are_open_there_and_absent_from_the_main_one(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    from responder.config import MetricsEndpoint, MetricsListen  # here: the rest also runs on older code

    settings = _settings(tmp_path, metrics=MetricsEndpoint(listen=MetricsListen(host="127.0.0.1", port=0)))
    async with running(settings) as (service, base):
        assert service.metrics_address is not None and service.metrics_address != service.address
        host, port = service.metrics_address
        async with http.get(f"http://{host}:{port}/metrics") as r:
            assert r.status == 200 and "responder_deliveries_total" in await r.text()
        async with http.get(f"{base}/metrics", headers=AUTH) as r:
            assert r.status == 404
        async with http.get(f"http://{host}:{port}/api/decisions", headers=AUTH) as r:
            assert r.status == 404, "the metrics listener serves /metrics only"
