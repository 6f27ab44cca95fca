"""The console as a person uses it, in a real browser (Playwright driving Debian's Chromium) against the
real service and the lab: log in with a token from the (test) identity provider, watch an Okta report's
decision arrive live, read the subject page, and press Undo as an approver (refused: the packets stay
blocked) and as an admin (access comes back)."""

from __future__ import annotations

import copy
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright  # a dev dependency: `make install` installs it

from responder.config import Settings
from responder.lab import Lab
from responder.service.operators import Role
from tests.support.oidc import OidcIssuer
from tests.support.payloads import payload
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run",
]  # fmt: skip
OKTA_SECRET = "okta-console-secret-value"
ALICE = "user:alice@example.com"
GROUPS = {"admin": ["responder-admins"], "approver": ["responder-approvers"], "viewer": ["soc"]}


def _okta(event_type: str, user: str) -> dict[str, Any]:
    body = copy.deepcopy(payload("okta/batch.json"))
    event = body["data"]["events"][0]
    # Published now, as a live delivery is: the subject page's curve runs from the event to now.
    published = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event |= {"uuid": str(uuid.uuid4()), "eventType": event_type, "published": published}
    event["actor"]["alternateId"] = event["target"][0]["alternateId"] = user
    body["eventId"] = str(uuid.uuid4())
    body["data"]["events"] = [event]
    return body


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    """Where the screenshots go: $RESPONDER_TEST_ARTEFACTS/console, else the test's own tmp dir."""
    root = os.environ.get("RESPONDER_TEST_ARTEFACTS")
    target = (Path(root) if root else tmp_path) / "console"
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
async def idp() -> AsyncIterator[OidcIssuer]:
    async with OidcIssuer() as issuer:
        yield issuer


def _token(idp: OidcIssuer, role: Role, email: str) -> str:
    """An access token of the identity provider for `email`, in the group that maps to `role`."""
    (group,) = GROUPS[role.name.lower()]
    return idp.mint(idp.claims(email=email, groups=[group]))


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run deploy/install-packages.sh (make install)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def _logged_in(browser: Any, base: str, token: str) -> Any:
    """A page of a fresh browser context, logged in through the login form with `token`."""
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    await page.goto(f"{base}/console")
    assert page.url.endswith("/console/login")  # no session yet: sent to the login page
    await page.get_by_label("Bearer token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{base}/console")
    await page.wait_for_selector("body[data-live='yes']")  # the timeline listens
    return page


async def test_console_shows_a_cut_off_live_and_only_an_admin_undoes_it(
    lab: Lab, browser: Any, artefacts: Path, tmp_path: Path, idp: OidcIssuer
) -> None:
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=lab.inventory_path, rules=(ROOT / "rules",),
        okta_secret=OKTA_SECRET, reconcile_interval_s=0.5,
        operators={"oidc": {"issuer": idp.issuer, "audience": idp.audience, "role_claim": "groups", "roles": GROUPS}},
    )  # fmt: skip
    assert await tcp(lab, "admin1", "10.100.0.20") == "open"
    async with running(settings) as (_, base), aiohttp.ClientSession() as http:
        admin = await _logged_in(browser, base, _token(idp, Role.ADMIN, "adam@example.com"))
        approver = await _logged_in(browser, base, _token(idp, Role.APPROVER, "april@example.com"))

        # An Okta report: the decision shows in the open timeline within a second, measured by the page.
        sent_at = await admin.evaluate("Date.now()")
        body = _okta("user.account.report_suspicious_activity_by_enduser", "alice@example.com")
        async with http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r:
            assert r.status == 200
        row = admin.locator("#timeline tbody tr[data-state='active']", has_text=ALICE)
        await row.wait_for(timeout=2000)
        seen_at = int(await row.get_attribute("data-seen-at") or 0)
        assert 0 <= seen_at - sent_at < 1000, f"shown {seen_at - sent_at} ms after the delivery"
        assert await row.get_by_role("button", name="Undo").is_visible()
        await approver.locator("#timeline tbody tr[data-state='active']", has_text=ALICE).wait_for(timeout=2000)
        assert await approver.get_by_role("button", name="Undo").count() == 0  # the page hides it
        await admin.screenshot(path=str(artefacts / "timeline.png"), full_page=True)

        # The subject page: why alice was cut off.
        await row.get_by_role("link", name=ALICE).click()
        await admin.wait_for_url("**/console/subjects/**")
        assert await admin.locator("svg.plot polyline.score").count() == 1
        assert await admin.locator("svg.plot circle.point").count() >= 1
        assert await admin.locator("svg.plot line.decision").count() == 1  # the cut-off, on the curve
        signals = admin.locator("table.signals tr.signal")
        assert await signals.count() >= 1
        assert "cut-off" in await admin.get_by_role("heading", level=3).first.inner_text()
        assert await admin.locator("table.hubs td", has_text="hub1").count() >= 1
        await admin.screenshot(path=str(artefacts / "subject.png"), full_page=True)
        await eventually(
            lambda: _blocked(lab), 2, "admin1 cut off from app1"
        )  # fmt: skip

        # Undo as an approver: the page shows no button, and the server refuses the request made anyway.
        await approver.goto(admin.url)
        assert await approver.get_by_role("button", name="Undo").count() == 0
        decision = await admin.locator("article.decision").first.get_attribute("data-id")
        status = await approver.evaluate(
            "async (id) => (await fetch(`/console/decisions/${id}/undo`, {method: 'POST'})).status", decision
        )
        assert status == 403
        await approver.reload()
        assert await approver.locator("article.decision .state").first.inner_text() == "active"
        assert await tcp(lab, "admin1", "10.100.0.20") != "open"  # still blocked

        # The hubs page: hub1 answers, its peers and set sizes are listed.
        hubs = await admin.context.new_page()
        await hubs.goto(f"{base}/console/hubs")
        assert "reachable" in await hubs.get_by_role("heading", name="hub1").inner_text()
        assert await hubs.get_by_role("table", name="Peers and handshake ages").locator("tbody tr").count() >= 1
        await hubs.screenshot(path=str(artefacts / "hubs.png"), full_page=True)
        await hubs.close()

        # Undo as an admin, from the keyboard: access comes back.
        await admin.get_by_role("button", name="Undo").first.focus()
        await admin.keyboard.press("Enter")
        await admin.get_by_role("status").filter(has_text="undo: accepted").wait_for(timeout=10_000)

        async def restored() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

        await eventually(restored, 5, "admin1 reaches app1 again after the admin's undo")
        # The open subject page follows: the decision shows as undone, its Undo button gone.
        await admin.locator("article.decision .state", has_text="undone").wait_for(timeout=2000)
        assert await admin.get_by_role("button", name="Undo").count() == 0
        await admin.reload()
        assert await admin.locator("article.decision .state").first.inner_text() == "undone"
        assert "adam@example.com: undone" in await admin.locator("ul.audit").first.inner_text()
    if os.environ.get("RESPONDER_UPDATE_SCREENSHOTS"):
        for name in ("timeline", "subject"):
            shutil.copy(artefacts / f"{name}.png", ROOT / "docs" / "img" / f"console-{name}.png")


async def _blocked(lab: Lab) -> bool:
    return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) != "open"
