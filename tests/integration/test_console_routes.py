"""The console's routes over real HTTP: nothing but the login and its assets without a session, the session
cookie's properties, roles enforced by the server, and forms refused from another origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from responder.console import DecisionFeed, console_routes, session
from responder.console.routes import ROLES
from responder.service.operators import Operator, Role
from tests.support.console import TOKEN_OF, operators
from tests.support.service import no_hubs, running, settings

RULES = Path(__file__).resolve().parents[2] / "rules"
PAGES = ["/console", "/console/hubs", "/console/subjects/user:alice@example.com", "/console/events"]
POSTS = {"approve": Role.APPROVER, "reject": Role.APPROVER, "undo": Role.ADMIN}


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    s = settings(journal=f"sqlite:///{tmp_path}/j.db", inventory=no_hubs(tmp_path), rules=(RULES,))
    async with running(s, operators=operators()) as (_, url):
        yield url


def _browser() -> aiohttp.ClientSession:
    # unsafe: the service listens on an IP address, where aiohttp's jar keeps no cookies by default.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _login(http: aiohttp.ClientSession, base: str, role: Role) -> None:
    async with http.post(
        f"{base}/console/login", data={"token": TOKEN_OF[role]}, headers={"Origin": base}, allow_redirects=False
    ) as r:
        assert r.status == 303, await r.text()
        assert r.headers["Location"] == "/console"
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie


async def test_every_console_page_without_a_session_goes_to_login_or_401(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for path in PAGES:
            async with http.get(f"{base}{path}", headers={"Accept": "text/html"}, allow_redirects=False) as r:
                assert (r.status, r.headers.get("Location")) == (303, "/console/login"), path
            async with http.get(f"{base}{path}", allow_redirects=False) as r:
                assert r.status == 401, path
        for verb in [*POSTS, "../../logout"]:
            async with http.post(f"{base}/console/decisions/x/{verb}", headers={"Origin": base}) as r:
                assert r.status in (401, 404), verb
        async with http.post(f"{base}/console/logout", headers={"Origin": base}, allow_redirects=False) as r:
            assert r.status == 401
        # The public parts.
        for path in ["/console/login", "/console/static/console.js", "/console/static/console.css"]:
            async with http.get(f"{base}{path}") as r:
                assert r.status == 200, path
        async with http.get(f"{base}/console/static/../../etc/passwd") as r:
            assert r.status == 404


async def test_a_wrong_token_is_refused_at_login_and_a_forged_cookie_counts_for_nothing(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/console/login", data={"token": "nope"}, headers={"Origin": base}) as r:
            assert r.status == 401
            assert "not logged in" in await r.text()
        async with http.post(
            f"{base}/console/login", data={"token": TOKEN_OF[Role.ADMIN]}, headers={"Origin": "https://evil.example"}
        ) as r:
            assert r.status == 403
    forged = session.issue(_admin(), b"not the service's key", 1e10)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/console", headers={"Cookie": f"{session.COOKIE}={forged}"}, allow_redirects=False) as r,
    ):
        assert r.status == 401
        assert "log in again" in await r.text()


def _admin() -> Operator:
    return Operator("mallory", Role.ADMIN, "token")


async def test_a_session_shows_the_pages_and_the_server_enforces_each_role(base: str) -> None:
    for role in Role:
        async with _browser() as http:
            await _login(http, base, role)
            for path in PAGES[:3]:
                async with http.get(f"{base}{path}") as r:
                    assert r.status == 200, path
                    assert role.name.lower() in await r.text()
            for verb, needed in POSTS.items():
                async with http.post(f"{base}/console/decisions/nosuch/{verb}", headers={"Origin": base}) as r:
                    # 404: allowed through to the (missing) decision; 403: this role may not.
                    assert r.status == (404 if role >= needed else 403), (role, verb, await r.text())


async def test_a_form_from_another_origin_or_without_one_is_refused(base: str) -> None:
    async with _browser() as http:
        await _login(http, base, Role.ADMIN)
        for headers in ({}, {"Origin": "https://evil.example"}):
            async with http.post(f"{base}/console/decisions/nosuch/undo", headers=headers) as r:
                assert r.status == 401, headers
        async with http.post(f"{base}/console/decisions/nosuch/undo", headers={"Origin": base}) as r:
            assert r.status == 404
        async with http.post(f"{base}/console/logout", headers={"Origin": base}, allow_redirects=False) as r:
            assert r.status == 303
        async with http.get(f"{base}/console", allow_redirects=False) as r:
            assert r.status == 401  # the cookie is gone


async def test_the_bearer_header_works_on_the_console_too(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {TOKEN_OF[Role.VIEWER]}"}
        async with http.get(f"{base}/console/hubs", headers=headers) as r:
            assert r.status == 200
        async with http.post(f"{base}/console/decisions/nosuch/approve", headers=headers) as r:
            assert r.status == 403


class _Nothing:
    async def approve(self, decision_id: str, actor: str) -> None: ...
    async def reject(self, decision_id: str, actor: str) -> None: ...
    async def undo(self, decision_id: str, actor: str) -> None: ...


async def test_every_console_route_is_in_the_role_table_and_guarded_by_it(base: str) -> None:
    routes = console_routes(None, _Nothing(), operators(), DecisionFeed(None), hubs={})  # type: ignore[arg-type]
    served = {(r.method, r.path) for r in routes if isinstance(r, web.RouteDef)}
    assert served == set(ROLES)
    async with aiohttp.ClientSession() as http:
        for (method, path), needed in ROLES.items():
            url = base + path.format(key="user:a@example.com", id="nosuch", name="console.js")
            async with http.request(method, url, headers={"Origin": base}, allow_redirects=False) as r:
                assert (r.status in (401, 303)) == (needed is not None), (method, path, r.status)
            for role in Role:
                if needed is None or (method, path) == ("GET", "/console/events"):
                    continue  # public; the event stream stays open (its guard is checked without a session)
                headers = {"Authorization": f"Bearer {TOKEN_OF[role]}", "Origin": base}
                async with http.request(method, url, headers=headers, allow_redirects=False) as r:
                    assert (r.status == 403) == (role < needed), (method, path, role, r.status)


async def test_without_any_way_to_authenticate_the_console_is_off_not_open(tmp_path: Path) -> None:
    s = settings(journal=f"sqlite:///{tmp_path}/j.db", inventory=no_hubs(tmp_path), rules=(RULES,))
    async with running(s) as (_, url), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/console", allow_redirects=False) as r:
            assert r.status == 503
        async with http.post(f"{url}/console/login", data={"token": "x" * 20}, headers={"Origin": url}) as r:
            assert r.status == 503
            assert "the console is disabled" in await r.text()
