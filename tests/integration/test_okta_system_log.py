"""The Okta System Log poller against the System Log contract server, with a real SQLite journal: paging,
the cursor kept and resumed (also after a SIGKILL of `responder run`), rate limits, a refused token, and
one decision for an event that came both through the hook and the log."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from pydantic import SecretStr

from responder.config import Okta, OktaSystemLog, Settings
from responder.ingest.handoff import JournalHandoff
from responder.ingest.okta_auth import ApiToken, OktaCredentials, ServiceApp
from responder.ingest.okta_logs import (
    MAX_FILTER_CHARS,
    SOURCE,
    SystemLogConfig,
    SystemLogError,
    SystemLogPoller,
    event_types_read,
    filter_expression,
    next_link,
)
from responder.journal import Journal, open_journal
from responder.policy.loader import load_rules
from responder.telemetry.metrics import Metrics
from tests.support.okta_contract import OktaSystemLogContract, log_event
from tests.support.process import ServiceProcess, free_port
from tests.support.service import event_keys, no_hubs, serving

RULES = Path(__file__).resolve().parents[2] / "rules"
TOKEN = "00a-okta-api-token-for-contract-tests"
OKTA_SECRET = "Basic b2t0YTpzZWNyZXQtdmFsdWU="
ADMIN = "admin-token-for-system-log-tests"
REPORT = "user.account.report_suspicious_activity_by_enduser"
THREAT = "security.threat.detected"


@pytest.fixture
async def contract() -> AsyncIterator[OktaSystemLogContract]:
    server = OktaSystemLogContract(TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        yield j
    finally:
        await j.close()


class _Sleeps:
    """asyncio.sleep that records each pause and waits at most `cap` seconds of it."""

    def __init__(self, cap: float = 0.01) -> None:
        self.cap = cap
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(min(seconds, self.cap))


def _poller(
    url: str,
    journal: Journal,
    metrics: Metrics | None = None,
    *,
    token: str = TOKEN,
    sleep: _Sleeps | None = None,
    credentials: OktaCredentials | None = None,
    **options: object,
) -> SystemLogPoller:
    config = SystemLogConfig(
        org_url=url, credentials=credentials or ApiToken(SecretStr(token)), event_types=frozenset({REPORT, THREAT}),
        interval_s=0.01,
        start=datetime.now(UTC) - timedelta(hours=1), max_wait_s=0.5, **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return SystemLogPoller(
        config, JournalHandoff(journal, "test"), journal, metrics or Metrics(), sleep=sleep or _Sleeps()
    )


async def _until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


# --- pure pieces ---------------------------------------------------------------------------------


def test_filter_names_every_type_the_default_rules_read_for_okta() -> None:
    types = event_types_read(load_rules([RULES]), ["user.lifecycle.deactivate"])
    assert {THREAT, REPORT, "user.lifecycle.deactivate"} <= types
    text = filter_expression(types)
    assert text is not None and f'eventType eq "{THREAT}"' in text and " or " in text


def test_too_long_a_filter_is_not_sent() -> None:
    many = {f"custom.event.type.{n:04d}" for n in range(MAX_FILTER_CHARS // 20)}
    assert filter_expression(many) is None
    assert filter_expression(set()) is None


def test_next_link_is_read_from_one_header_or_several() -> None:
    header = '<https://o.okta.com/api/v1/logs?a=1>; rel="self", <https://o.okta.com/api/v1/logs?after=X>; rel="next"'
    assert next_link(header) == "https://o.okta.com/api/v1/logs?after=X"
    assert next_link('<https://o.okta.com/api/v1/logs>; rel="self"') is None
    assert next_link(None) is None


# --- against the contract server -----------------------------------------------------------------


async def test_pages_are_followed_and_the_cursor_resumes_where_it_stopped(
    contract: OktaSystemLogContract, journal: Journal
) -> None:
    contract.add(*(log_event(REPORT, actor_login=f"u{n}@example.com") for n in range(2500)))
    contract.add(*(log_event("user.session.start", actor_login="noise@example.com") for _ in range(30)))
    first = _poller(contract.url, journal)
    async with aiohttp.ClientSession() as http:
        assert await first.poll(http) == 2500
        assert first.pages == 3  # 1000 + 1000 + 500: a short page is the end
        assert all('eventType eq "' in r.query["filter"] for r in contract.requests)
        state = await journal.source_state(SOURCE)
        assert state is not None and "after=" in state["next"]
        contract.add(*(log_event(THREAT, actor_ip="203.0.113.9") for _ in range(3)))
        again = _poller(contract.url, journal)  # a restart: the saved cursor, not `since`
        assert await again.poll(http) == 3
        assert "after" in contract.requests[-1].query and again.pages == 1
        assert await again.poll(http) == 0  # caught up: an empty page, still with a next link
    keys = await event_keys(journal)
    assert len(keys) == len(set(keys)) == 2503  # the noise was filtered out by Okta


async def test_with_too_many_types_for_a_filter_the_poller_reads_all_and_keeps_the_wanted(
    contract: OktaSystemLogContract, journal: Journal
) -> None:
    wanted = log_event(REPORT, actor_login="gina@example.com")
    contract.add(log_event("user.session.start", actor_login="noise@example.com"), wanted)
    many = frozenset({REPORT, *(f"custom.event.type.{n:04d}" for n in range(MAX_FILTER_CHARS // 20))})
    poller = _poller(contract.url, journal)
    poller = SystemLogPoller(
        dataclasses.replace(poller.config, event_types=many), JournalHandoff(journal, "test"), journal, Metrics()
    )
    async with aiohttp.ClientSession() as http:
        assert await poller.poll(http) == 1
    assert "filter" not in contract.requests[0].query
    assert await event_keys(journal) == [f"okta:{wanted['uuid']}"]


async def test_a_page_too_large_or_a_link_elsewhere_is_refused(
    contract: OktaSystemLogContract, journal: Journal
) -> None:
    contract.add(*(log_event(REPORT, actor_login=f"u{n}@example.com") for n in range(20)))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(SystemLogError, match="a page over 4096 bytes") as refused:
            await _poller(contract.url, journal, max_response_bytes=4096).poll(http)
        assert refused.value.kind == "too_large"
        # The cursor is only ever followed to the org it was configured with: the token goes nowhere else.
        elsewhere = "http://169.254.169.254/api/v1/logs?after=x"
        await journal.save_source_state(SOURCE, {"next": elsewhere, "filter": filter_expression({REPORT, THREAT})}, "t")
        await _poller(contract.url, journal).poll(http)
        assert "since" in contract.requests[-1].query and "after" not in contract.requests[-1].query
    assert len(await event_keys(journal)) == 20


async def test_a_poll_reads_at_most_max_pages_then_pauses(contract: OktaSystemLogContract, journal: Journal) -> None:
    contract.add(*(log_event(REPORT, actor_login=f"u{n}@example.com") for n in range(50)))
    poller = _poller(contract.url, journal, page_limit=10, max_pages_per_poll=2)
    async with aiohttp.ClientSession() as http:
        assert await poller.poll(http) == 20
        assert await poller.poll(http) == 20
        assert await poller.poll(http) == 10
    assert len(await event_keys(journal)) == 50


async def test_429_waits_for_the_reset_and_then_loses_nothing(
    contract: OktaSystemLogContract, journal: Journal
) -> None:
    contract.add(*(log_event(REPORT, actor_login=f"u{n}@example.com") for n in range(40)))
    contract.fail(429, 2)
    metrics = Metrics()
    sleeps = _Sleeps()
    poller = _poller(contract.url, journal, metrics, sleep=sleeps, page_limit=10)
    task = asyncio.create_task(poller.run())
    try:
        await _until(lambda: _count(journal, 40))
        await _until(lambda: _ready(poller))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.status for r in contract.requests[:3]] == [429, 429, 200]
    assert sum(1 for p in sleeps.pauses if p >= 0.5) >= 2  # waited for the reset (bounded by max_wait_s)
    assert _sample(metrics, "responder_source_polls_total", source=SOURCE, outcome="rate_limited") == 2
    assert poller.ready
    assert len(await event_keys(journal)) == 40


async def test_few_requests_left_in_the_window_slow_the_poller_down(
    contract: OktaSystemLogContract, journal: Journal
) -> None:
    contract.limit_per_window = 4
    contract.add(*(log_event(REPORT, actor_login=f"u{n}@example.com") for n in range(30)))
    metrics = Metrics()
    sleeps = _Sleeps()
    poller = _poller(contract.url, journal, metrics, sleep=sleeps, page_limit=10)
    async with aiohttp.ClientSession() as http:
        await poller.poll(http)
    # After the third request one is left: the poller waits for the reset instead of spending it.
    assert _sample(metrics, "responder_source_errors_total", source=SOURCE, kind="rate_limit_low") >= 1
    assert any(p > 0 for p in sleeps.pauses)
    assert all(r.status == 200 for r in contract.requests)


async def test_a_refused_token_says_so_and_keeps_trying(
    contract: OktaSystemLogContract, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    poller = _poller(contract.url, journal, metrics, token="00a-a-token-okta-does-not-know")
    task = asyncio.create_task(poller.run())
    try:
        await _until(lambda: _requests(contract, 3))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not poller.ready
    assert "401 E0000011" in str(poller.status()["detail"])
    assert _sample(metrics, "responder_source_errors_total", source=SOURCE, kind="unauthorized") >= 3
    lines = [r.getMessage() for r in caplog.records if "okta.system_log" in r.getMessage() and "401" in r.getMessage()]
    assert len(lines) == 1 and "check the API token" in lines[0] and TOKEN not in lines[0]


async def test_an_invalid_event_costs_only_itself(contract: OktaSystemLogContract, journal: Journal) -> None:
    good = log_event(REPORT, actor_login="alice@example.com")
    bad = log_event(REPORT, actor_login="bob@example.com", actor={"id": 1, "type": ["not", "a", "type"]})
    contract.add(bad, good)
    async with aiohttp.ClientSession() as http:
        assert await _poller(contract.url, journal).poll(http) == 1
    assert await event_keys(journal) == [f"okta:{good['uuid']}"]
    rejected = [a for a in await journal.audit_trail() if a.kind == "record.rejected"]
    assert len(rejected) == 1 and rejected[0].actor == SOURCE and bad["uuid"] in rejected[0].detail


async def test_an_event_from_the_hook_and_the_log_decides_once(contract: OktaSystemLogContract, tmp_path: Path) -> None:
    event = log_event(REPORT, actor_login="carol@example.com")
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", okta_secret=OKTA_SECRET, admin_token=ADMIN,
        inventory=no_hubs(tmp_path), okta_api_token=TOKEN,
        okta=Okta(system_log=OktaSystemLog(org_url=contract.url, interval_s=0.2)),
    )  # fmt: skip
    async with serving(settings) as (base, journal), aiohttp.ClientSession() as http:
        hook = {"eventType": "com.okta.event_hook", "eventId": "hook-1", "data": {"events": [event]}}
        headers = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
        async with http.post(f"{base}/hooks/okta", data=json.dumps(hook), headers=headers) as r:
            assert r.status == 200
        contract.add(event)
        await _until(lambda: _served_events(contract))
        auth = {"Authorization": f"Bearer {ADMIN}"}
        await _until(lambda: _scored(http, base, auth, "carol@example.com"))
        # One event in the journal, decided on once (the lab test shows the one cut-off it leads to).
        assert await event_keys(journal) == [f"okta:{event['uuid']}"]
        assert not await journal.pending_events("test")
        async with http.get(f"{base}/readyz", headers=auth) as r:
            ready = await r.json()
        assert ready["sources"] == {SOURCE: {"ready": True, "detail": ready["sources"][SOURCE]["detail"]}}
        assert ready["checks"][f"source:{SOURCE}"] is True
        async with http.get(f"{base}/metrics", headers=auth) as r:
            text = await r.text()
        lag = next(line for line in text.splitlines() if line.startswith("responder_source_lag_seconds{"))
        assert f'source="{SOURCE}"' in lag and 0 <= float(lag.split()[-1]) < 10
        assert f'responder_source_polls_total{{outcome="ok",source="{SOURCE}"}}' in text


async def test_readiness_says_a_failing_source_but_the_hooks_stay_up(
    contract: OktaSystemLogContract, tmp_path: Path
) -> None:
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", okta_secret=OKTA_SECRET, admin_token=ADMIN,
        inventory=no_hubs(tmp_path), okta_api_token="00a-a-token-okta-does-not-know",
        okta=Okta(system_log=OktaSystemLog(org_url=contract.url, interval_s=0.2)),
    )  # fmt: skip
    async with serving(settings) as (base, _), aiohttp.ClientSession() as http:
        await _until(lambda: _requests(contract, 1))
        async with http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 503
            body = await r.json()
        assert body["sources"][SOURCE]["ready"] is False and "401" in body["sources"][SOURCE]["detail"]
        hook = {"eventType": "com.okta.event_hook", "data": {"events": [log_event(REPORT, actor_login="d@e.com")]}}
        headers = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
        async with http.post(f"{base}/hooks/okta", data=json.dumps(hook), headers=headers) as r:
            assert r.status == 200


@pytest.mark.timeout(120)
async def test_a_sigkilled_service_resumes_from_the_saved_cursor(
    contract: OktaSystemLogContract, tmp_path: Path
) -> None:
    total = 3000
    contract.add(*(log_event(REPORT, actor_login=f"u{n % 300}@example.com") for n in range(total)))
    contract.page_delay_s = 0.05
    port = free_port()
    config = tmp_path / "responder.yaml"
    config.write_text(json.dumps({
        "listen": {"host": "127.0.0.1", "port": port}, "journal": f"sqlite:///{tmp_path}/journal.db",
        "rules": [str(RULES)], "inventory": str(no_hubs(tmp_path)), "okta_api_token": TOKEN, "instance": "pull",
        "okta": {"system_log": {"org_url": contract.url, "interval_s": 0.2, "page_limit": 100,
                                "start": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}},
    }))  # fmt: skip
    service = ServiceProcess(config, tmp_path / "service.log", f"http://127.0.0.1:{port}")
    journal = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        await service.start()
        await _until(lambda: _pages(contract, 8), timeout=30)
        await service.kill()  # mid-way: 22 pages are still to come
        killed_at = len(contract.requests)
        saved = await journal.source_state(SOURCE)
        assert saved is not None and "after=" in saved["next"]
        assert len(await event_keys(journal)) < total
        await service.start()
        await _until(lambda: _count(journal, total), timeout=60)
        resumed = contract.requests[killed_at]
        assert "after" in resumed.query  # from the cursor, not from `start`
        await service.stop()
        keys = await event_keys(journal)
        assert len(keys) == len(set(keys)) == total
        # What was read twice (the page in flight when killed) is at most a page or two.
        assert contract.pages_with_events <= total // 100 + 2
    finally:
        await service.stop()
        await journal.close()


def _key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


async def test_a_service_app_reads_with_a_cached_access_token_and_renews_it(
    contract: OktaSystemLogContract, journal: Journal
) -> None:
    private, public = _key_pair()
    contract.register_app("0oa-responder", public, lifetime_s=62)  # renewed 60 s before expiry: after 2 s
    app = ServiceApp(contract.url, "0oa-responder", SecretStr(private))
    poller = _poller(contract.url, journal, credentials=app)
    contract.add(log_event(REPORT, actor_login="erin@example.com"))
    async with aiohttp.ClientSession() as http:
        assert await poller.poll(http) == 1
        contract.add(log_event(REPORT, actor_login="frank@example.com"))
        assert await poller.poll(http) == 1
        assert app.issued == 1  # one token for both polls
        await asyncio.sleep(2.1)  # within a minute of its expiry: a new one
        await poller.poll(http)
        assert app.issued == 2
        contract.access_tokens.clear()  # revoked in Okta: the 401 drops it, the next poll gets another
        with pytest.raises(SystemLogError, match="401"):
            await poller.poll(http)
        await poller.poll(http)
        assert app.issued == 3
    assert [error for _, error in contract.token_requests] == [None, None, None]
    assert len(await event_keys(journal)) == 2
    assert "BEGIN" not in repr(app) and "PRIVATE" not in repr(poller.config)


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        ({"require_dpop": True}, "turn off 'Require Demonstrating Proof of Possession'"),
        ({"scopes": frozenset({"okta.users.read"})}, "grant okta.logs.read"),
        ({"other_key": True}, "invalid_client"),
    ],
)
async def test_a_refused_service_app_says_what_to_change(
    contract: OktaSystemLogContract, journal: Journal, setup: dict[str, object], said: str
) -> None:
    private, public = _key_pair()
    if setup.pop("other_key", False):
        public = _key_pair()[1]
    contract.register_app("0oa-responder", public, **setup)  # type: ignore[arg-type]
    poller = _poller(contract.url, journal, credentials=ServiceApp(contract.url, "0oa-responder", SecretStr(private)))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(SystemLogError, match=re.escape(said)) as refused:
            await poller.poll(http)
    assert refused.value.kind == "unauthorized"
    assert not contract.requests  # the logs were never asked without a token


# --- helpers --------------------------------------------------------------------------------------


async def _count(journal: Journal, n: int) -> bool:
    return len(await event_keys(journal)) >= n


async def _ready(poller: SystemLogPoller) -> bool:
    return poller.ready


async def _requests(contract: OktaSystemLogContract, n: int) -> bool:
    return len(contract.requests) >= n


async def _pages(contract: OktaSystemLogContract, n: int) -> bool:
    return contract.pages_with_events >= n


async def _served_events(contract: OktaSystemLogContract) -> bool:
    return contract.pages_with_events >= 1


async def _scored(http: aiohttp.ClientSession, base: str, auth: dict[str, str], user: str) -> bool:
    async with http.get(f"{base}/api/subjects/user:{user}", headers=auth) as r:
        return float((await r.json())["score"]) == 80  # the end-user report's points


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0
