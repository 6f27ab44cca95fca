"""Rules reloaded live: through the admin API of the real service (in process, no hubs) and by SIGHUP to a
real `responder run`. A good change takes effect for the next event while risk already accrued is kept; a
broken file keeps the old rules and is answered with file:line; every reload is audited and counted."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from responder.config import Settings
from responder.journal import open_journal
from tests.support.process import ServiceProcess, free_port
from tests.support.service import no_hubs, serving

RULES = Path(__file__).resolve().parents[2] / "rules"
OKTA_SECRET = "Basic b2t0YTpzZWNyZXQtdmFsdWU="
OKTA_HEADERS = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
TOKEN = "admin-token-for-reload-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
REPORT = "user.account.report_suspicious_activity_by_enduser"
REPORTED_POINTS = "    type: user.account.report_suspicious_activity_by_enduser\n    points: 80\n"


def _rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    assert REPORTED_POINTS in (rules / "identity.yaml").read_text()
    return rules


def _reported_points(rules: Path, points: int) -> None:
    """The Okta end-user report is worth `points` from now on."""
    identity = rules / "identity.yaml"
    identity.write_text(identity.read_text().replace(REPORTED_POINTS, REPORTED_POINTS.replace("80", str(points))))


def _report(user: str) -> bytes:
    party = {"id": "00u1", "type": "User", "alternateId": user}
    event = {
        "uuid": uuid.uuid4().hex, "published": datetime.now(UTC).isoformat(), "severity": "WARN",
        "eventType": REPORT, "actor": party, "target": [party],
    }  # fmt: skip
    return json.dumps({"eventId": uuid.uuid4().hex, "data": {"events": [event]}}).encode()


async def _reports(http: aiohttp.ClientSession, base: str, user: str) -> None:
    async with http.post(f"{base}/hooks/okta", data=_report(user), headers=OKTA_HEADERS) as r:
        assert r.status == 200


async def _state(http: aiohttp.ClientSession, base: str, user: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/subjects/user:{user}", headers=ADMIN) as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def _scored(http: aiohttp.ClientSession, base: str, user: str) -> float:
    """The subject's score once the pipeline has decided on what was sent (at most 5 s)."""
    for _ in range(100):
        if (score := float((await _state(http, base, user))["score"])) > 0:
            return score
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user} was never scored")


async def _reload(http: aiohttp.ClientSession, base: str, actor: str) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{base}/api/rules/reload", json={"actor": actor}, headers=ADMIN) as r:
        body: dict[str, Any] = await r.json()
        return r.status, body


async def _metric(http: aiohttp.ClientSession, base: str, outcome: str) -> float:
    async with http.get(f"{base}/metrics", headers=ADMIN) as r:
        text = await r.text()
    line = f'responder_rules_reloads_total{{outcome="{outcome}"}} '
    values = [float(x.removeprefix(line)) for x in text.splitlines() if x.startswith(line)]
    return values[0] if values else 0.0


async def test_reload_applies_a_good_change_to_the_next_event_and_keeps_accrued_risk(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", okta_secret=OKTA_SECRET, admin_token=TOKEN,
        inventory=no_hubs(tmp_path), rules=(rules,),
    )  # fmt: skip
    async with serving(settings) as (base, journal), aiohttp.ClientSession() as http:
        await _reports(http, base, "alice@example.com")
        assert await _scored(http, base, "alice@example.com") == 80
        alice = await _state(http, base, "alice@example.com")

        # Raised: a lowered one would also lower the signal's cap (its points by default), and with it the
        # accrued hits' worth, which is the new policy speaking, not lost state.
        _reported_points(rules, 90)
        status, body = await _reload(http, base, "sec-eng@example.com")
        assert (status, body["applied"]) == (200, True), body

        await _reports(http, base, "bob@example.com")
        assert await _scored(http, base, "bob@example.com") == 90  # the new rules, for the next event
        assert await _state(http, base, "alice@example.com") == alice  # risk and response already in force kept

        (rules / "identity.yaml").write_text("signals:\n  - {id: broken, points: oops}\n")
        status, body = await _reload(http, base, "sec-eng@example.com")
        assert (status, body["applied"]) == (422, False), body
        assert any(f"{rules / 'identity.yaml'}:2" in p for p in body["problems"]), body["problems"]

        await _reports(http, base, "carol@example.com")
        assert await _scored(http, base, "carol@example.com") == 90  # the rules in force before the broken file
        assert await _metric(http, base, "applied") == 1
        assert await _metric(http, base, "refused") == 1
        trail = await journal.audit_trail("rules")
        assert [(a.actor, a.kind, json.loads(a.detail)["outcome"]) for a in trail] == [
            # Who reloaded is the verified identity (here the shared admin token), not the body's "actor".
            ("bootstrap-admin", "rules.reload", "applied"),
            ("bootstrap-admin", "rules.reload", "refused"),
        ]
        async with http.post(f"{base}/api/rules/reload") as r:
            assert r.status == 401  # the admin token, as for every admin route


async def test_sighup_reloads_the_rules_of_a_running_responder(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    port = free_port()
    config = tmp_path / "responder.yaml"
    settings = {
        "listen": {"host": "127.0.0.1", "port": port}, "journal": f"sqlite:///{tmp_path}/journal.db",
        "rules": [str(rules)], "inventory": str(no_hubs(tmp_path)), "okta_secret": OKTA_SECRET,
        "admin_token": TOKEN, "instance": "reload",
    }  # fmt: skip
    config.write_text(json.dumps(settings))  # JSON is YAML
    service = ServiceProcess(config, tmp_path / "service.log", f"http://127.0.0.1:{port}")
    await service.start()
    try:
        assert service.process is not None
        async with aiohttp.ClientSession() as http:
            _reported_points(rules, 30)
            service.process.send_signal(signal.SIGHUP)
            for _ in range(100):
                if await _metric(http, service.base, "applied") == 1:
                    break
                await asyncio.sleep(0.05)
            await _reports(http, service.base, "alice@example.com")
            assert await _scored(http, service.base, "alice@example.com") == 30
    finally:
        await service.stop()
    assert "rules reloaded" in service.log.read_text()
    journal = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        assert [(a.actor, json.loads(a.detail)["outcome"]) for a in await journal.audit_trail("rules")] == [
            ("signal", "applied")
        ]
    finally:
        await journal.close()
