"""Approvals from chat against the lab: an Okta delivery decides a quarantine that needs approval, a mapped
operator approves it by pressing Slack's button (the request signed as Slack signs it), and packets prove
the quarantine; the audit trail names that operator. And nobody answering in time escalates: the
escalation reaches the next channel (a Slack contract receiver, through the real notifier), then the
decision is rejected.

The message with the buttons is the notifier's to post (tests/lab/test_notify_lab.py); here the press is
sent as Slack would send it, and the time measured is from the delivery to the decision waiting."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from responder.config import Chat, Settings, SlackChat
from responder.lab import Lab
from tests.integration.test_chat_approvals import SIGNING_SECRET, TEAM, _signed
from tests.lab.test_service import ADMIN, ADMIN_HEADERS, OKTA_SECRET, _okta, _rules
from tests.support.chat_contracts import SlackContract, serving, slack_buttons
from tests.support.probes import eventually, tcp
from tests.support.service import running

pytestmark = pytest.mark.lab
OPERATOR = "ana@example.com"
BOT_TOKEN = "xoxb-lab-escalation-test"
QUARANTINE = "    actions: [quarantine]\n    ttl: 1h"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


def _settings(lab: Lab, tmp: Path, timeout: str, notify: dict[str, Any] | None = None) -> Settings:
    rules = _rules(tmp, **{QUARANTINE: f"{QUARANTINE}\n    approval: true\n{timeout}"})
    return Settings(
        journal=f"sqlite:///{tmp}/journal.db", inventory=lab.inventory_path, rules=(rules,),
        okta_secret=OKTA_SECRET, admin_token=ADMIN, reconcile_interval_s=0.5, slack_signing_secret=SIGNING_SECRET,
        chat=Chat(people={OPERATOR: "approver"}, slack=SlackChat(users={"U0ANA": OPERATOR}, team_id=TEAM)),
        **({"notify": notify} if notify is not None else {}),
    )  # fmt: skip


async def _waiting(http: aiohttp.ClientSession, base: str) -> tuple[dict[str, Any], float]:
    """Deliver the threat event; the decision once it waits for approval, and how long that took."""
    sent = time.monotonic()
    body = _okta("security.threat.detected", "alice@example.com")
    async with http.post(f"{base}/hooks/okta", json=body, headers={"Authorization": OKTA_SECRET}) as r:
        assert r.status == 200
    found: list[dict[str, Any]] = []

    async def waiting() -> bool:
        async with http.get(f"{base}/api/decisions?state=awaiting_approval", headers=ADMIN_HEADERS) as r:
            found[:] = (await r.json())["decisions"]
        return bool(found)

    await eventually(waiting, 2, "a decision awaiting approval")
    return found[0], time.monotonic() - sent


async def _show(http: aiohttp.ClientSession, base: str, decision_id: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/decisions/{decision_id}", headers=ADMIN_HEADERS) as r:
        assert r.status == 200
        view: dict[str, Any] = await r.json()
        return view


async def test_a_mapped_operator_approves_from_slack_and_the_quarantine_is_enforced_in_their_name(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    assert await tcp(lab, "admin1", "10.100.0.20") == "open"
    async with running(_settings(lab, tmp_path, "    approval_timeout: 1h\n")) as (service, base):
        decision, took = await _waiting(http, base)
        assert took < 1.0
        assert await tcp(lab, "admin1", "10.100.0.20") == "open"  # nothing enforced while it waits

        payload = {
            "type": "block_actions", "user": {"id": "U0ANA", "team_id": TEAM},
            "actions": [{"action_id": "approve", "value": decision["id"], "type": "button"}],
        }  # fmt: skip
        body = urlencode({"payload": json.dumps(payload)}).encode()
        headers = _signed(body) | {"Content-Type": "application/x-www-form-urlencoded"}
        async with http.post(f"{base}/hooks/slack/interactions", data=body, headers=headers) as r:
            assert r.status == 200

        async def blocked() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.3) != "open"

        await eventually(blocked, 3, "quarantined after the approval from Slack")
        assert service.slack is not None
        await service.slack.drained()
        shown = await _show(http, base, decision["id"])
        assert shown["state"] == "active"
        assert [(a["action"]["type"], a["state"], a["verified"]) for a in shown["actions"]] == [
            ("quarantine", "done", True)
        ]
        assert [(a["actor"], a["kind"]) for a in shown["audit"]] == [(OPERATOR, "approve")]

        async with http.post(f"{base}/api/decisions/{decision['id']}/undo", headers=ADMIN_HEADERS) as r:
            assert r.status == 202

        async def open_again() -> bool:
            return await tcp(lab, "admin1", "10.100.0.20", timeout=0.5) == "open"

        await eventually(open_again, 5, "open after undo")


async def test_nobody_answering_escalates_to_the_next_channel_then_rejects_and_nothing_is_enforced(
    lab: Lab, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    timeout = "    approval_timeout: 2s\n    on_timeout: escalate\n    escalate_to: secops-leads\n"
    first, leads = SlackContract(BOT_TOKEN), SlackContract(BOT_TOKEN)
    async with serving(first) as first_api, serving(leads) as leads_api:

        def bot(channel: str, api: str) -> dict[str, str]:
            return {"type": "slack_bot", "channel": channel, "token": BOT_TOKEN, "api_url": f"{api}/api"}

        channels = {"secops": bot("C0SECOPS", first_api), "secops-leads": bot("C0LEADS", leads_api)}
        notify = {"channels": channels, "routes": [{"kinds": ["awaiting_approval"], "channels": ["secops"]}]}
        async with running(_settings(lab, tmp_path, timeout, notify)) as (_, base):
            decision, _ = await _waiting(http, base)
            [asked] = await first.wait_for(1, timeout=2)
            assert leads.received == []  # the leads hear of it only if nobody answers
            [escalated] = await leads.wait_for(1, timeout=5)  # after the 2 s approval timeout
            assert escalated["channel"] == "C0LEADS"
            assert escalated["text"].startswith("Approval escalated: quarantine on user:alice@example.com")
            assert slack_buttons(escalated) == [("approve", decision["id"]), ("reject", decision["id"])]
            assert slack_buttons(asked) == [("approve", decision["id"]), ("reject", decision["id"])]

            async def rejected() -> bool:
                return str((await _show(http, base, decision["id"]))["state"]) == "rejected"

            await eventually(rejected, 4, "rejected 2 s after the escalation")
            shown = await _show(http, base, decision["id"])
            assert [(a["actor"], a["kind"]) for a in shown["audit"]] == [
                ("policy:approval-timeout", "escalated"), ("policy:approval-timeout", "rejected"),
            ]  # fmt: skip
            assert await tcp(lab, "admin1", "10.100.0.20") == "open"
