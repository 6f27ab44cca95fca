"""The Graph pull sources through the real service against the Graph contract server
(tests/support/graph_contract.py) and an in-memory hub: a users subscription kept alive through a virtual
month (renewed before expiry, reauthorized, resynchronised after `missed`, re-created after
`subscriptionRemoved`); a user disabled in Entra cuts their devices off; Entra ID Protection read by polling
resumes from its cursor after a restart and decides each detection once; 429 is waited out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from responder.config import Entra, EntraRiskPolling, EntraSubscriptions, Listen, Settings
from responder.inventory import Inventory
from responder.journal import open_journal
from responder.service.service import Service
from tests.support.graph_contract import GraphContract, running_contract
from tests.support.memory_hub import MemoryHub
from tests.support.service import event_bodies

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "rules" / "tests" / "inventory.yaml"  # hub1: alice's admin1, bob-laptop, ...
CLIENT_STATE = "client-state-of-the-graph-tests"
TOKEN = "admin-token-for-graph-source-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ALICE, BOB = "alice@example.com", "bob@example.com"
ALICE_KEY = "JfQ7FIatlaE5jj7rPYO8QBABX8yb7bNbQy4AKY1QIfc="


class _Clock:
    """Virtual time shared by the service and the contract server; a test moves it forward."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


async def _until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
async def graph(clock: _Clock) -> AsyncIterator[GraphContract]:
    contract = await running_contract(now=clock)
    try:
        yield contract
    finally:
        await contract.stop()


def _settings(tmp_path: Path, graph: GraphContract, port: int, **entra: Any) -> Settings:
    return Settings(
        listen=Listen(port=port), journal=f"sqlite:///{tmp_path}/journal.db", inventory=INVENTORY,
        rules=(ROOT / "rules",), admin_token=TOKEN, entra_client_state=CLIENT_STATE,
        entra_client_secret=graph.client_secret,
        entra=Entra(tenant_id=graph.tenant, client_id=graph.client_id, graph_url=graph.graph_url,
                    login_url=graph.url, timeout_s=3, **entra),
    )  # fmt: skip


def _subscriptions(port: int) -> EntraSubscriptions:
    base = f"http://127.0.0.1:{port}"
    return EntraSubscriptions(
        notification_url=f"{base}/hooks/entra",
        lifecycle_notification_url=f"{base}/hooks/entra/lifecycle",
        check_interval_s=0.05,
    )


@asynccontextmanager
async def _service(settings: Settings, hub: MemoryHub, clock: _Clock) -> AsyncIterator[Service]:
    """The service on the port its settings name (Graph must know the notification URL before it starts)."""
    service = Service(settings, hubs={"hub1": hub}, instance="test", clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        async with asyncio.timeout(20):
            while not service.started.is_set():
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
        yield service
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await asyncio.gather(task, return_exceptions=True)


async def _decisions(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/decisions", headers=ADMIN) as r:
        decisions: list[dict[str, Any]] = (await r.json())["decisions"]
        return decisions


async def _events_of_type(settings: Settings, kind: str) -> list[dict[str, Any]]:
    journal = await open_journal(settings.journal)
    try:
        return [e for e in await event_bodies(journal) if e["type"] == kind]
    finally:
        await journal.close()


def _hub() -> MemoryHub:
    return MemoryHub.of(Inventory.load(INVENTORY), "hub1")


async def test_a_users_subscription_survives_a_virtual_month_and_each_lifecycle_event(
    tmp_path: Path, graph: GraphContract, clock: _Clock
) -> None:
    graph.add_user(ALICE)
    bob = graph.add_user(BOB)
    port = _free_port()
    settings = _settings(tmp_path, graph, port, subscriptions=_subscriptions(port))
    async with _service(settings, _hub(), clock) as service:
        await _until(lambda: len(graph.subscriptions) == 1)
        first = next(iter(graph.subscriptions))
        # Created with the lifecycle URL and the client state, both URLs validated against the real routes.
        port_base = f"http://127.0.0.1:{port}"
        assert graph.validated == [f"{port_base}/hooks/entra", f"{port_base}/hooks/entra/lifecycle"]
        assert graph.subscriptions[first].client_state == CLIENT_STATE
        renewals = 0
        for day in range(1, 31):
            clock.ahead = timedelta(days=day)
            if day == 10:
                await graph.lifecycle(next(iter(graph.subscriptions)), "reauthorizationRequired")
                await _until(lambda: any(s.path.endswith("/reauthorize") for s in graph.requests))
            if day == 15:
                await graph.disable_user(bob, notify=False)  # the notification never came
                await graph.lifecycle(next(iter(graph.subscriptions)), "missed")
                await _until(lambda: _events_of_type(settings, "user.disabled"))
            if day == 20:
                removed = next(iter(graph.subscriptions))
                await graph.lifecycle(removed, "subscriptionRemoved")
                await _until(lambda r=removed: len(graph.subscriptions) == 1 and r not in graph.subscriptions)
            now = clock()
            # Renewed well before expiry: never less than half of the 29 days left after a check.
            await _until(lambda t=now: all(s.expires - t > timedelta(days=14) for s in graph.subscriptions.values()))
            assert len(graph.subscriptions) == 1, f"day {day}: {graph.subscriptions}"
            renewals = sum(1 for s in graph.requests if s.method == "PATCH")
        assert renewals >= 1
        assert service.url is not None
        disabled = await _events_of_type(settings, "user.disabled")
        assert [e["subjects"]["users"] for e in disabled] == [[BOB]]
        assert disabled[0]["severity"] == 3  # high
    creates = [s for s in graph.requests if s.method == "POST" and s.path == "/v1.0/subscriptions"]
    assert [s.status for s in creates] == [201, 201]  # the first, and after subscriptionRemoved


async def test_disabling_a_user_in_entra_cuts_their_devices_off(
    tmp_path: Path, graph: GraphContract, clock: _Clock
) -> None:
    alice = graph.add_user(ALICE)
    graph.add_user(BOB)
    port = _free_port()
    settings = _settings(tmp_path, graph, port, subscriptions=_subscriptions(port))
    hub = _hub()
    async with _service(settings, hub, clock) as service:
        await _until(lambda: len(graph.subscriptions) == 1)
        await _until(lambda: any("/users/delta" in s.path for s in graph.requests))  # the baseline
        await graph.disable_user(alice)
        assert graph.notifications_sent[-1][2] == 202  # answered at once; the read happens after
        assert service.url is not None
        base = service.url

        async def cut_off() -> bool:
            return any(d["response"] == "offboard" for d in await _decisions(base))

        await _until(cut_off)
        await _until(lambda: ALICE_KEY not in hub.peers)
        async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz", headers=ADMIN) as r:
            ready = await r.json()
        assert ready["sources"]["entra.subscriptions"]["ready"] is True
        assert ready["checks"]["source:entra.subscriptions"] is True
        # Another change of the same user (Graph notifies any): read, but the account is still disabled.
        await graph.disable_user(alice)
        await _until(lambda: sum(s.path == f"/v1.0/users/{alice}" for s in graph.requests) == 2)
        await asyncio.sleep(0.1)
    events = await _events_of_type(settings, "user.disabled")
    assert [e["subjects"]["users"] for e in events] == [[ALICE]]


async def test_a_deleted_user_is_named_from_the_deleted_items(
    tmp_path: Path, graph: GraphContract, clock: _Clock
) -> None:
    alice = graph.add_user(ALICE)
    port = _free_port()
    settings = _settings(tmp_path, graph, port, subscriptions=_subscriptions(port))
    async with _service(settings, _hub(), clock):
        await _until(lambda: len(graph.subscriptions) == 1)
        await graph.delete_user(alice)
        await _until(lambda: _events_of_type(settings, "user.deleted"))
    [event] = await _events_of_type(settings, "user.deleted")
    assert event["subjects"]["users"] == [ALICE]


async def test_risk_polling_resumes_from_its_cursor_and_decides_each_detection_once(
    tmp_path: Path, graph: GraphContract, clock: _Clock
) -> None:
    port = _free_port()
    polling = EntraRiskPolling(interval_s=0.05, overlap_s=3600)
    settings = _settings(tmp_path, graph, port, risk_polling=polling)
    for n in range(5):  # three pages of two
        graph.add_detection(ALICE if n == 0 else f"user{n}@example.com", at=clock() - timedelta(minutes=10 - n))
    graph.add_risky_user(BOB)
    graph.fail(429, 2, retry_after="0", path_contains="riskDetections")
    async with _service(settings, _hub(), clock) as service:
        assert service.url is not None
        await _until(lambda: _leaked_count(settings, 5), timeout=15)
        metrics = await _metrics(service.url)
        assert 'responder_source_polls_total{outcome="rate_limited",source="entra.risk"} 2.0' in metrics
        assert "responder_source_lag_seconds" in metrics
        # The overlap reads the same detections every round; they are not handed off again.
        assert 'responder_duplicate_events_total{source="entra"} 0.0' in metrics
    # A restart: the cursor is in the journal, so only what is new is read into a decision.
    graph.add_detection(ALICE, at=clock() + timedelta(minutes=1))
    async with _service(settings, _hub(), clock):
        await _until(lambda: _leaked_count(settings, 6), timeout=15)
        await asyncio.sleep(0.3)  # several more polls, over the same detections
    detections = await _events_of_type(settings, "leakedCredentials")
    assert len(detections) == 6
    assert len({e["id"] for e in detections}) == 6
    risky = await _events_of_type(settings, "riskyUser")
    assert [e["subjects"]["users"] for e in risky] == [[BOB]]
    journal = await open_journal(settings.journal)
    try:
        state = await journal.source_state("entra.risk")
    finally:
        await journal.close()
    assert state is not None and state["riskDetection"]["ids"]
    # Filtered on time: after the first round, each query starts at the cursor less the overlap.
    queries = [s.query for s in graph.requests if s.path.endswith("/riskDetections") and s.status == 200]
    assert all("detectedDateTime" in q for q in queries)


async def _leaked_count(settings: Settings, n: int) -> bool:
    return len(await _events_of_type(settings, "leakedCredentials")) >= n


async def _metrics(base: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics", headers=ADMIN) as r:
        return await r.text()


async def test_readiness_names_each_pull_source_and_a_failing_one(
    tmp_path: Path, graph: GraphContract, clock: _Clock
) -> None:
    port = _free_port()
    settings = _settings(tmp_path, graph, port, risk_polling=EntraRiskPolling(interval_s=0.05))
    graph.client_secret = "another-secret-than-the-service-has"  # the token request is refused
    async with _service(settings, _hub(), clock) as service:
        assert service.url is not None
        url = f"{service.url}/readyz"

        async def says_why() -> bool:
            async with aiohttp.ClientSession() as http, http.get(url, headers=ADMIN) as r:
                body = await r.json()
            detail = body.get("sources", {}).get("entra.risk", {}).get("detail", "")
            return (
                r.status == 503 and "token request refused" in detail and body["checks"]["source:entra.risk"] is False
            )

        await _until(says_why)


async def test_a_user_disabled_while_the_service_was_down_is_caught_up_by_delta_at_the_next_start(
    tmp_path: Path, graph: GraphContract, clock: _Clock
) -> None:
    graph.add_user(ALICE)
    bob = graph.add_user(BOB)
    port = _free_port()
    settings = _settings(tmp_path, graph, port, subscriptions=_subscriptions(port))
    async with _service(settings, _hub(), clock):
        await _until(lambda: _delta_link_saved(settings))
    await graph.disable_user(bob, notify=False)  # Graph's delivery failed: the service was down
    async with _service(settings, _hub(), clock):
        await _until(lambda: _events_of_type(settings, "user.disabled"))
    [event] = await _events_of_type(settings, "user.disabled")
    assert event["subjects"]["users"] == [BOB]
    # The subscription saved by the first run was found again, not created twice.
    assert [s.status for s in graph.requests if s.method == "POST" and s.path == "/v1.0/subscriptions"] == [201]


async def _delta_link_saved(settings: Settings) -> bool:
    journal = await open_journal(settings.journal)
    try:
        state = await journal.source_state("entra.subscriptions")
    finally:
        await journal.close()
    return state is not None and "delta_link" in state and bool(state.get("subscriptions"))


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its RSA key, as an app registration would have them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "responder graph app")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "app.crt", directory / "app.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_a_certificate_signs_the_client_assertion_instead_of_a_secret(
    tmp_path: Path, graph: GraphContract, clock: _Clock
) -> None:
    cert, key = _certificate(tmp_path)
    graph.certificate_pem = cert.read_bytes()
    graph.add_detection(ALICE, at=clock() - timedelta(minutes=1))
    settings = _settings(tmp_path, graph, _free_port(), risk_polling=EntraRiskPolling(interval_s=0.05))
    assert settings.entra is not None
    entra = settings.entra.model_copy(update={"client_certificate": cert, "client_key": key})
    settings = settings.model_copy(update={"entra": entra, "entra_client_secret": None})
    async with _service(settings, _hub(), clock):
        await _until(lambda: _leaked_count(settings, 1))
    assert [s.status for s in graph.requests if s.path.endswith("/token")][:1] == [200]


async def test_a_throttled_subscription_call_is_tried_again_after_retry_after(
    tmp_path: Path, graph: GraphContract, clock: _Clock
) -> None:
    graph.fail(429, 2, retry_after="0", path_contains="/subscriptions")
    port = _free_port()
    settings = _settings(tmp_path, graph, port, subscriptions=_subscriptions(port))
    async with _service(settings, _hub(), clock) as service:
        await _until(lambda: len(graph.subscriptions) == 1)
        assert service.url is not None
        metrics = await _metrics(service.url)
    assert 'responder_source_polls_total{outcome="rate_limited",source="entra.subscriptions"} 2.0' in metrics
    assert [s.status for s in graph.requests if s.path == "/v1.0/subscriptions"] == [429, 429, 201]
