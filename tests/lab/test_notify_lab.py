"""Notifications against the lab: a decision held for approval reaches Slack (a contract receiver on
loopback) within a second of the Okta delivery, with its buttons; once approved, the enforced message says
hub1 verified it, and packets agree."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from responder.lab import Lab
from tests.lab.test_service import OKTA_SECRET, _okta, _operate, _rules, _settings
from tests.support.chat_contracts import SlackContract, serving, slack_buttons
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
BOT_TOKEN = "xoxb-lab-notifications-test"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def test_an_approval_reaches_slack_within_a_second_and_the_enforcement_it_allows_is_told_verified(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    rules = _rules(
        tmp_path,
        **{"    actions: [quarantine]\n    ttl: 1h": "    actions: [quarantine]\n    ttl: 1h\n    approval: true"},
    )
    slack = SlackContract(BOT_TOKEN)
    async with serving(slack) as api:
        bot = {"type": "slack_bot", "channel": "C0SECOPS", "token": BOT_TOKEN, "api_url": f"{api}/api"}
        notify = {"channels": {"secops": bot}, "routes": [{"channels": ["secops"]}]}
        async with running(_settings(lab, tmp_path, rules, notify=notify)) as (_, base):
            body = _okta("security.threat.detected", "alice@example.com")
            sent = time.monotonic()
            async with http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r:
                assert r.status == 200
            [waiting] = await slack.wait_for(1, timeout=1.0)
            told_within = time.monotonic() - sent
            decision_id = slack_buttons(waiting)[0][1]
            assert await tcp(lab, "admin1", "10.100.0.20") == "open"  # nothing enforced yet

            await _operate(http, base, decision_id, "approve")
            approved, enforced = (await slack.wait_for(3, timeout=5))[1:]

            async def blocked() -> bool:
                return await tcp(lab, "admin1", "10.100.0.20", timeout=0.3) != "open"

            await eventually(blocked, 3, "quarantined after approval")
    assert told_within < 1.0
    assert waiting["text"].startswith("Awaiting approval: quarantine on user:alice@example.com")
    assert slack_buttons(waiting) == [("approve", decision_id), ("reject", decision_id)]
    assert approved["text"].startswith("Approved: quarantine")
    assert enforced["text"].startswith("Enforced: quarantine") and "hub1 (verified)" in str(enforced["blocks"])
    assert "admin1" in str(enforced["blocks"])  # who: the person's devices
    assert slack_buttons(enforced) == [("undo", decision_id)]
