"""The admin API against bad query values and deep bodies, and what a client sees when the service fails:
always a JSON answer that names the problem, never a plain-text 500 or a traceback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from responder.config import Settings
from responder.journal.base import SqlJournal
from tests.support.service import no_hubs, running

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    s = Settings(journal=f"sqlite:///{tmp_path}/journal.db", admin_token=TOKEN, inventory=no_hubs(tmp_path))
    async with running(s) as (_, url):
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=-1", "limit"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=%201", "limit"),
        ("limit=1_0", "limit"),
        ("limit=ten", "limit"),
        ("state=bogus", "state"),
        ("order=id;drop", "order"),
    ],
)
async def test_bad_query_value_on_the_admin_api_is_a_400_naming_it(
    base: str, http: aiohttp.ClientSession, query: str, named: str
) -> None:
    async with http.get(f"{base}/api/decisions?{query}", headers=AUTH) as r:
        assert r.status == 400, await r.text()
        assert r.content_type == "application/json"
        assert named in (await r.json())["error"]


async def test_good_limit_is_still_answered(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/api/decisions?limit=1000&state=active", headers=AUTH) as r:
        assert r.status == 200 and await r.json() == {"decisions": []}


async def test_deeply_nested_operator_body_is_a_400_not_a_500(base: str, http: aiohttp.ClientSession) -> None:
    body = "[" * 100_000 + "]" * 100_000
    headers = {**AUTH, "Content-Type": "application/json"}
    async with http.post(f"{base}/api/decisions/dec-x/undo", data=body, headers=headers) as r:
        assert r.status == 400, await r.text()
        assert "nested" in (await r.json())["error"]


async def test_unexpected_failure_is_a_logged_json_500_without_traceback(
    base: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("database detail /var/lib/responder/secret-path")

    monkeypatch.setattr(SqlJournal, "decisions", broken)
    async with http.get(f"{base}/api/decisions", headers=AUTH) as r:
        text = await r.text()
        assert r.status == 500
        assert r.content_type == "application/json"
    answer = json.loads(text)
    assert answer["error"] == "internal error"
    assert "Traceback" not in text and "secret-path" not in text and "RuntimeError" not in text
    logged = [rec for rec in caplog.records if answer["incident"] in rec.getMessage()]
    assert logged and logged[0].exc_info is not None, "the log keeps the traceback the client does not get"
