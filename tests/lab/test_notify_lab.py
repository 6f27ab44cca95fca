"""Notifications against the lab, end to end with approvals from chat: an Okta delivery decides a quarantine
that needs approval; its message reaches Slack (a contract receiver on loopback) within a second, with
Approve and Reject; the mapped operator presses Approve (the request signed as Slack signs it, with the
button's own value); the enforced message names that operator and says hub1 verified it, and packets agree."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from responder.config import Chat, SlackChat
from responder.lab import Lab
from tests.integration.test_chat_approvals import SIGNING_SECRET, TEAM, _signed
from tests.lab.test_service import ADMIN_HEADERS, OKTA_SECRET, _okta, _rules, _settings
from tests.support.chat_contracts import SlackContract, serving, slack_buttons
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
BOT_TOKEN = "xoxb-lab-notifications-test"
OPERATOR, SLACK_USER = "ana@example.com", "U0ANA"
QUARANTINE = "    actions: [quarantine]\n    ttl: 1h"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def test_an_approval_reaches_slack_within_a_second_is_approved_there_and_its_enforcement_is_told_verified(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    rules = _rules(tmp_path, **{QUARANTINE: QUARANTINE + "\n    approval: true"})
    slack = SlackContract(BOT_TOKEN)
    async with serving(slack) as api:
        bot = {"type": "slack_bot", "channel": "C0SECOPS", "token": BOT_TOKEN, "api_url": f"{api}/api"}
        settings = _settings(
            lab, tmp_path, rules,
            notify={"channels": {"secops": bot}, "routes": [{"channels": ["secops"]}]},
            slack_signing_secret=SIGNING_SECRET,
            chat=Chat(people={OPERATOR: "approver"}, slack=SlackChat(users={SLACK_USER: OPERATOR}, team_id=TEAM)),
        )  # fmt: skip
        async with running(settings) as (_, base):
            body = _okta("security.threat.detected", "alice@example.com")
            sent = time.monotonic()
            async with http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r:
                assert r.status == 200
            [waiting] = await slack.wait_for(1, timeout=1.0)
            told_within = time.monotonic() - sent
            assert await tcp(lab, "admin1", "10.100.0.20") == "open"  # nothing enforced yet

            # The press of the message's own Approve button, as Slack posts it.
            action, value = slack_buttons(waiting)[0]
            payload = {
                "type": "block_actions", "user": {"id": SLACK_USER, "team_id": TEAM},
                "actions": [{"action_id": action, "value": value, "type": "button"}],
            }  # fmt: skip
            form = urlencode({"payload": json.dumps(payload)}).encode()
            headers = _signed(form) | {"Content-Type": "application/x-www-form-urlencoded"}
            async with http.post(f"{base}/hooks/slack/interactions", data=form, headers=headers) as r:
                assert r.status == 200

            async def blocked() -> bool:
                return await tcp(lab, "admin1", "10.100.0.20", timeout=0.3) != "open"

            await eventually(blocked, 3, "quarantined after the approval from Slack")
            approved, enforced = (await slack.wait_for(3, timeout=5))[1:]

            # The lab is the session's: leave it as found.
            async with http.post(f"{base}/api/decisions/{value}/undo", headers=ADMIN_HEADERS) as r:
                assert r.status == 202, await r.text()

            async def open_again() -> bool:
                return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

            await eventually(open_again, 5, "open after undo")
    assert told_within < 1.0
    assert waiting["text"].startswith("Awaiting approval: quarantine on user:alice@example.com")
    assert slack_buttons(waiting) == [("approve", value), ("reject", value)]
    assert approved["text"].startswith("Approved: quarantine") and OPERATOR in str(approved["blocks"])
    assert enforced["text"].startswith("Enforced: quarantine") and "hub1 (verified)" in str(enforced["blocks"])
    assert OPERATOR in str(enforced["blocks"]) and "admin1" in str(enforced["blocks"])  # by whom; who
    assert slack_buttons(enforced) == [("undo", value)]
