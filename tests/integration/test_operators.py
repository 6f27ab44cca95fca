"""No route is reachable without a verified identity of the right role, walked over the real service's
router: every route is either in the public allow-list (it verifies its caller itself) or in the role
table, and each is tried with no credential, with every role below the one it needs, and with that role.
A route in neither list fails the test: a new route must say who may call it. And the audit trail names
the verified operator (OIDC, API token), whatever the request body says."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from typer.testing import CliRunner

from responder.cli import app
from responder.config import Settings
from responder.inventory import Inventory
from responder.journal import open_journal
from responder.service.operators import BootstrapToken, Operators, Role
from tests.support.memory_hub import MemoryHub
from tests.support.oidc import OidcIssuer
from tests.support.service import running

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "rules" / "tests" / "inventory.yaml"  # hub1: alice's admin1, app1, bob-laptop, breakglass1
OKTA_SECRET = "Basic b3BlcmF0b3JzOnNlY3JldC12YWx1ZQ=="
ENTRA_STATE = "entra-client-state-for-operators"
BOOTSTRAP = "bootstrap-token-for-operator-tests"
GROUPS = {"admin": ["responder-admins"], "approver": ["responder-approvers"], "viewer": ["soc"]}
ALICE = "alice@example.com"
BREACH = "security.breached_credential.detected"  # rotate-key, held for approval (alice is an admin)

# Routes that verify their caller themselves (a shared secret, a signature): no operator, no role.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/hooks/okta"),  # Okta's one-time verification challenge, with the Okta secret
    ("POST", "/hooks/okta"),  # the Okta secret in Authorization
    ("POST", "/hooks/entra"),  # Graph's clientState
    ("POST", "/hooks/entra/lifecycle"),
    ("POST", "/hooks/ssf"),  # a SET signed by the transmitter
    ("POST", "/hooks/slack/interactions"),  # Slack's signing secret and timestamp
    ("GET", "/links/{token}"),  # a signed one-time approval link: the signature is the credential
    ("POST", "/links/{token}"),
    ("GET", "/console/login"),  # the login form, and the login that checks the credential it is given
    ("POST", "/console/login"),
    ("GET", "/console/static/{name}"),  # the console's own script and style sheet
}
# Every other route, with the least role it needs. HEAD is GET's.
ROLES = {
    ("GET", "/readyz"): Role.VIEWER,
    ("GET", "/metrics"): Role.VIEWER,
    ("GET", "/api/decisions"): Role.VIEWER,
    ("GET", "/api/decisions/{id}"): Role.VIEWER,
    ("GET", "/api/subjects/{key}"): Role.VIEWER,
    ("POST", "/api/decisions/{id}/approve"): Role.APPROVER,
    ("POST", "/api/decisions/{id}/undo"): Role.ADMIN,
    ("POST", "/api/rules/reload"): Role.ADMIN,
    ("POST", "/console/logout"): Role.VIEWER,
    ("GET", "/console"): Role.VIEWER,
    ("GET", "/console/events"): Role.VIEWER,
    ("GET", "/console/subjects/{key}"): Role.VIEWER,
    ("GET", "/console/hubs"): Role.VIEWER,
    ("POST", "/console/decisions/{id}/approve"): Role.APPROVER,
    ("POST", "/console/decisions/{id}/reject"): Role.APPROVER,
    ("POST", "/console/decisions/{id}/undo"): Role.ADMIN,
}
SAMPLE = {"id": "no-such-decision", "key": f"user:{ALICE}"}  # a value for each path parameter


def _routes(app: web.Application) -> list[tuple[str, str]]:
    found = set()
    for resource in app.router.resources():
        for route in resource:
            method = "GET" if route.method == "HEAD" else route.method
            found.add((method, resource.canonical))
    return sorted(found)


def _url(base: str, path: str) -> str:
    for name, value in SAMPLE.items():
        path = path.replace(f"{{{name}}}", value)
    assert "{" not in path, f"give a sample value for the path parameter in {path}"
    return base + path


@pytest.fixture
async def idp() -> AsyncIterator[OidcIssuer]:
    async with OidcIssuer() as issuer:
        yield issuer


def _settings(tmp_path: Path, idp: OidcIssuer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "journal": f"sqlite:///{tmp_path}/journal.db", "inventory": INVENTORY, "rules": (ROOT / "rules",),
        "okta_secret": OKTA_SECRET, "entra_client_state": ENTRA_STATE, "admin_token": BOOTSTRAP,
        "ssf": {"issuer": idp.issuer, "audience": "responder", "jwks_url": idp.jwks_url},
        "operators": {
            "oidc": {"issuer": idp.issuer, "audience": idp.audience, "role_claim": "groups", "roles": GROUPS},
            "tokens_file": tmp_path / "tokens.yaml",
        },
    }  # fmt: skip
    return Settings(**(values | overrides))


def _oidc(idp: OidcIssuer, role: Role) -> str:
    (group,) = GROUPS[role.name.lower()]
    return idp.mint(idp.claims(email=f"{role.name.lower()}@example.com", groups=[group]))


def _api_token(path: Path, role: Role) -> str:
    name = f"matrix-{role.name.lower()}"
    args = ["operators", "token", "create", name, "--role", role.name.lower(), "--tokens-file", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


async def _status(http: aiohttp.ClientSession, method: str, url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"actor": "mallory"} if method == "POST" else None
    # Only the status: a stream (the console's server-sent events) would not end.
    async with http.request(method, url, headers=headers, json=body, allow_redirects=False) as r:
        return r.status


async def test_every_route_is_public_by_name_or_needs_its_role_from_every_kind_of_credential(
    tmp_path: Path, idp: OidcIssuer
) -> None:
    settings = _settings(tmp_path, idp)
    tokens_file = settings.operators.tokens_file
    assert tokens_file is not None
    api = {role: _api_token(tokens_file, role) for role in Role}
    credentials = {"oidc": {role: _oidc(idp, role) for role in Role}, "api token": api}
    hub = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    async with running(settings, hubs={"hub1": hub}) as (service, base), aiohttp.ClientSession() as http:
        assert service.app is not None
        routes = _routes(service.app)
        undeclared = [r for r in routes if r not in PUBLIC and r not in ROLES]
        assert not undeclared, f"routes with no role in the table (add them to ROLES or PUBLIC): {undeclared}"
        assert set(ROLES) & set(routes) >= {("POST", "/api/decisions/{id}/undo"), ("GET", "/readyz")}
        problems = []
        for method, path in routes:
            if (method, path) in PUBLIC:
                continue
            needed, url = ROLES[(method, path)], _url(base, path)
            if (got := await _status(http, method, url, None)) != 401:
                problems.append(f"{method} {path} without a credential: {got}, not 401")
            if (got := await _status(http, method, url, "made-up-token")) != 401:
                problems.append(f"{method} {path} with a made-up token: {got}, not 401")
            for kind, tokens in credentials.items():
                for role in Role:
                    got = await _status(http, method, url, tokens[role])
                    if role < needed and got != 403:
                        problems.append(f"{method} {path} as a {kind} {role.name.lower()}: {got}, not 403")
                    if role >= needed and got in (401, 403, 503):
                        problems.append(f"{method} {path} as a {kind} {role.name.lower()}: refused ({got})")
        assert not problems, "\n".join(problems)


async def test_without_any_way_to_authenticate_every_guarded_route_answers_503(tmp_path: Path, idp: OidcIssuer) -> None:
    settings = _settings(tmp_path, idp, admin_token=None, operators={})
    hub = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    async with running(settings, hubs={"hub1": hub}) as (service, base), aiohttp.ClientSession() as http:
        assert service.app is not None
        for method, path in _routes(service.app):
            if (method, path) not in PUBLIC:
                assert await _status(http, method, _url(base, path), BOOTSTRAP) == 503, (method, path)


async def test_the_bootstrap_token_is_an_admin_until_it_is_turned_off(tmp_path: Path, idp: OidcIssuer) -> None:
    hub = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    on = _settings(tmp_path, idp)
    async with running(on, hubs={"hub1": hub}) as (_, base), aiohttp.ClientSession() as http:
        assert await _status(http, "POST", f"{base}/api/rules/reload", BOOTSTRAP) == 200
    off = _settings(tmp_path, idp, operators=on.operators.model_copy(update={"bootstrap_token": False}).model_dump())
    async with running(off, hubs={"hub1": hub}) as (_, base), aiohttp.ClientSession() as http:
        assert await _status(http, "POST", f"{base}/api/rules/reload", BOOTSTRAP) == 401
        assert await _status(http, "POST", f"{base}/api/rules/reload", _oidc(idp, Role.ADMIN)) == 200


async def test_a_token_with_no_mapped_group_is_403_naming_the_claim(tmp_path: Path, idp: OidcIssuer) -> None:
    hub = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    token = idp.mint(idp.claims(email="frank@example.com", groups=["Everyone"]))
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        running(_settings(tmp_path, idp), hubs={"hub1": hub}) as (_, base),
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/decisions", headers=headers) as r,
    ):
        assert r.status == 403
        assert "frank@example.com has no role here: the token's 'groups' claim" in (await r.json())["error"]


async def _okta(http: aiohttp.ClientSession, base: str, event_type: str) -> None:
    party = {"type": "User", "alternateId": ALICE, "id": "00u-alice"}
    event = {
        "uuid": str(uuid.uuid4()), "published": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "eventType": event_type, "version": "0", "severity": "WARN", "actor": party, "target": [party],
        "outcome": {"result": "SUCCESS", "reason": "operators test"},
    }  # fmt: skip
    body = {"eventType": "com.okta.event_hook", "eventId": str(uuid.uuid4()), "data": {"events": [event]}}
    headers = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
    async with http.post(f"{base}/hooks/okta", data=json.dumps(body), headers=headers) as r:
        assert r.status == 200, await r.text()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_the_audit_trail_names_the_verified_operator_not_the_body(tmp_path: Path, idp: OidcIssuer) -> None:
    settings = _settings(tmp_path, idp)
    hub = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    viewer, approver, admin = (_oidc(idp, role) for role in Role)
    async with running(settings, hubs={"hub1": hub}) as (_, base), aiohttp.ClientSession() as http:

        async def call(method: str, path: str, token: str) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.request(method, base + path, headers=headers, json={"actor": "mallory"}) as r:
                return r.status, await r.json()

        await _okta(http, base, BREACH)
        found: list[str] = []

        async def held() -> bool:
            _, body = await call("GET", "/api/decisions?state=awaiting_approval", viewer)
            found[:] = [d["id"] for d in body["decisions"]]
            return bool(found)

        await _until(held)
        (decision,) = found
        assert (await call("POST", f"/api/decisions/{decision}/approve", viewer))[0] == 403
        assert (await call("POST", f"/api/decisions/{decision}/approve", approver))[0] == 202

        async def active() -> bool:
            return (await call("GET", f"/api/decisions/{decision}", viewer))[1]["state"] == "active"

        await _until(active)
        assert (await call("POST", f"/api/decisions/{decision}/undo", approver))[0] == 403
        assert (await call("POST", f"/api/decisions/{decision}/undo", admin))[0] == 202
        assert (await call("POST", "/api/rules/reload", admin))[0] == 200

    journal = await open_journal(settings.journal)
    try:
        trail = [(a.kind, a.actor) for a in await journal.audit_trail(decision)]
        reloads = [a.actor for a in await journal.audit_trail("rules")]
    finally:
        await journal.close()
    assert ("approve", "approver@example.com") in trail
    assert any(kind.startswith("undo") and actor == "admin@example.com" for kind, actor in trail), trail
    assert reloads[-1] == "admin@example.com"
    assert all(actor != "mallory" for _, actor in trail) and "mallory" not in reloads


async def test_a_test_may_give_the_service_its_own_operators(tmp_path: Path, idp: OidcIssuer) -> None:
    own = Operators([BootstrapToken(SecretStr("a-token-of-the-tests-own-choosing"))])
    hub = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    settings = _settings(tmp_path, idp)
    async with running(settings, hubs={"hub1": hub}, operators=own) as (service, base), aiohttp.ClientSession() as http:
        assert service.operators is own
        assert await _status(http, "GET", f"{base}/api/decisions", "a-token-of-the-tests-own-choosing") == 200
        assert await _status(http, "GET", f"{base}/api/decisions", BOOTSTRAP) == 401
