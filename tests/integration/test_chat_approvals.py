"""Approvals from chat through the real service (Okta webhook in, SQLite journal) against an in-memory hub:
Slack's button presses signed as Slack signs them, the outcome posted back to a response_url receiver on
loopback; signed one-time links; approval timeouts on the service's clock moved forward."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from responder.config import Chat, Settings, SlackChat
from responder.inventory import Inventory
from responder.notify.notice import Notice, NoticeKind
from responder.service.links import ApprovalLinks
from responder.service.service import Service
from tests.integration.test_lifecycle import (
    ALICE_IP,
    ALICE_KEY,
    BREACH,
    INVENTORY,
    OKTA_SECRET,
    REPORT,
    ROOT,
    TOKEN,
    _applies,
    _Clock,
    _Responder,
    _until,
)
from tests.support.memory_hub import MemoryHub
from tests.support.service import running

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the shape of a Slack app's signing secret
LINK_KEY = "link-key-for-chat-approval-tests-0123456789"
TEAM = "T0TEAM001"
APPROVER, VIEWER, ADMIN = "ana@example.com", "vic@example.com", "ada@example.com"
SLACK_USERS = {"U0ANA": APPROVER, "U0VIC": VIEWER, "U0ADA": ADMIN}


@dataclass
class _SlackReceiver:
    """Slack's side of response_url: what the responder posted back, in order."""

    url: str = ""
    posted: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.posted.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[_SlackReceiver]:
    got = _SlackReceiver()
    app = web.Application()
    app.router.add_post("/actions/{rest:.*}", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    got.url = f"http://{host}:{port}/actions/"
    try:
        yield got
    finally:
        await runner.cleanup()


def _rules(tmp_path: Path, timeout: str | None) -> Path:
    """The shipped rules, with the key rotation's approval timeout replaced by `timeout` (YAML lines)."""
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    responses = rules / "responses.yaml"
    text = responses.read_text()
    anchor = """    approval: '"admin_devices" in subject.sets'\n"""
    assert anchor in text
    lines = [line for line in text[text.index(anchor) + len(anchor) :].splitlines(keepends=True)]
    kept = [line for line in lines if not line.lstrip().startswith(("approval_timeout:", "on_timeout:"))]
    head = text[: text.index(anchor) + len(anchor)]
    responses.write_text(head + (timeout or "") + "".join(kept))
    return rules


@dataclass
class _Chat:
    responder: _Responder
    service: Service
    http: aiohttp.ClientSession
    base: str
    receiver: _SlackReceiver
    clock: _Clock
    notices: list[Notice]
    hub: MemoryHub

    async def press(
        self, verb: str, decision_id: str, user: str, *, team: str = TEAM, headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> aiohttp.ClientResponse:  # fmt: skip
        """Press a button the way Slack delivers it: a form with a JSON payload, signed."""
        payload = {
            "type": "block_actions", "user": {"id": user, "team_id": team}, "team": {"id": team},
            "actions": [{"action_id": verb, "value": decision_id, "type": "button"}],
            "response_url": f"{self.receiver.url}{decision_id}",
        }  # fmt: skip
        body = body if body is not None else urlencode({"payload": json.dumps(payload)}).encode()
        sent = headers if headers is not None else _signed(body)
        sent = {"Content-Type": "application/x-www-form-urlencoded"} | sent
        async with self.http.post(f"{self.base}/hooks/slack/interactions", data=body, headers=sent) as r:
            await r.read()
            return r

    async def drained(self) -> None:
        assert self.service.slack is not None
        await self.service.slack.drained()


def _signed(body: bytes, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    mac = hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={mac}"}


@asynccontextmanager
async def _chat(tmp_path: Path, receiver: _SlackReceiver, timeout: str | None) -> AsyncIterator[_Chat]:
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=INVENTORY, rules=(_rules(tmp_path, timeout),),
        okta_secret=OKTA_SECRET, admin_token=TOKEN, slack_signing_secret=SIGNING_SECRET, link_key=LINK_KEY,
        chat=Chat(
            people={APPROVER: "approver", VIEWER: "viewer", ADMIN: "admin"}, link_base_url="https://responder.test",
            slack=SlackChat(users=SLACK_USERS, team_id=TEAM, response_url_prefix=receiver.url),
        ),
    )  # fmt: skip
    hub = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    clock = _Clock()
    notices: list[Notice] = []
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        running(settings, hubs={"hub1": hub}, clock=clock) as (service, base),
    ):
        assert service.lifecycle is not None
        # The notifier's stand-in: what the lifecycle tells people, kept for the test to read.
        service.lifecycle._notices = _Recorder(notices)
        yield _Chat(_Responder(http, base), service, http, base, receiver, clock, notices, hub)


@dataclass
class _Recorder:
    notices: list[Notice]

    def emit(self, notice: Notice) -> None:
        self.notices.append(notice)


@pytest.fixture
async def chat(tmp_path: Path, receiver: _SlackReceiver) -> AsyncIterator[_Chat]:
    async with _chat(tmp_path, receiver, None) as c:
        yield c


async def _waiting(chat: _Chat) -> str:
    await chat.responder.okta(BREACH)
    decision = await chat.responder.decision("rotate-key")
    assert decision["state"] == "awaiting_approval"
    return str(decision["id"])


async def _audit(chat: _Chat, decision_id: str) -> list[tuple[str, str]]:
    return [(a["actor"], a["kind"]) for a in (await chat.responder.show(decision_id))["audit"]]


# --- Slack -------------------------------------------------------------------------------------------------


async def test_an_approver_approves_from_slack_and_the_actions_run_verified_in_that_operators_name(
    chat: _Chat,
) -> None:
    decision_id = await _waiting(chat)
    started = time.monotonic()
    r = await chat.press("approve", decision_id, "U0ANA")
    assert r.status == 200 and time.monotonic() - started < 3  # Slack's deadline for the acknowledgement
    await chat.drained()

    approved = await chat.responder.decision("rotate-key")
    assert approved["state"] == "active"
    assert _applies(approved) == [("kill_flows", "done", True), ("rotate_key", "done", True)]
    assert ALICE_KEY in chat.hub.revoked and ALICE_IP not in chat.hub.flows
    assert await _audit(chat, decision_id) == [(APPROVER, "approve")]
    assert chat.receiver.posted[-1] == {
        "replace_original": True, "text": f"Approved by {APPROVER}: decision {decision_id}.",
    }  # fmt: skip


async def test_a_viewer_is_told_privately_and_nothing_is_done(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    r = await chat.press("approve", decision_id, "U0VIC")
    await chat.drained()
    assert r.status == 200
    assert await chat.responder.state_of(decision_id) == "awaiting_approval" and chat.hub.batches == []
    assert await _audit(chat, decision_id) == [(VIEWER, "chat.refused")]
    told = chat.receiver.posted[-1]
    assert told["response_type"] == "ephemeral" and told["replace_original"] is False
    assert f"{VIEWER} is a viewer: approve needs approver" in told["text"]


async def test_an_unmapped_slack_user_is_refused_and_the_refusal_is_audited(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    await chat.press("approve", decision_id, "U0STRANGER")
    await chat.drained()
    assert await chat.responder.state_of(decision_id) == "awaiting_approval"
    assert await _audit(chat, decision_id) == [("slack:U0STRANGER", "chat.refused")]
    assert "not mapped to a responder operator" in chat.receiver.posted[-1]["text"]


async def test_a_mapped_user_of_another_workspace_is_refused(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    await chat.press("approve", decision_id, "U0ANA", team="T0OTHER")
    await chat.drained()
    assert await chat.responder.state_of(decision_id) == "awaiting_approval"
    assert await _audit(chat, decision_id) == [(APPROVER, "chat.refused")]


async def test_an_approver_rejects_from_slack(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    await chat.press("reject", decision_id, "U0ANA")
    await chat.drained()
    assert await chat.responder.state_of(decision_id) == "rejected" and chat.hub.batches == []
    assert await _audit(chat, decision_id) == [(APPROVER, "rejected")]


async def test_undo_from_slack_needs_an_admin_and_the_admins_undo_gives_access_back(chat: _Chat) -> None:
    await chat.responder.okta(REPORT)
    decision = await chat.responder.decision("cut-off")
    assert ALICE_KEY not in chat.hub.peers

    await chat.press("undo", decision["id"], "U0ANA")
    await chat.drained()
    assert await chat.responder.state_of(decision["id"]) == "active"
    assert "approver: undo needs admin" in chat.receiver.posted[-1]["text"]

    await chat.press("undo", decision["id"], "U0ADA")
    await chat.drained()
    assert await chat.responder.state_of(decision["id"]) == "undone"
    await _until(lambda: _has_peer(chat))
    assert await _audit(chat, decision["id"]) == [(APPROVER, "chat.refused"), (ADMIN, "undone")]
    assert chat.receiver.posted[-1]["text"] == f"Undone by {ADMIN}: decision {decision['id']}."


async def _has_peer(chat: _Chat) -> bool:
    return ALICE_KEY in chat.hub.peers


async def test_a_press_on_a_decision_already_answered_says_so_and_changes_nothing(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    await chat.press("approve", decision_id, "U0ANA")
    await chat.drained()
    await chat.press("reject", decision_id, "U0ADA")
    await chat.drained()
    assert await chat.responder.state_of(decision_id) == "active"
    assert "is active, not awaiting approval" in chat.receiver.posted[-1]["text"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bad", "bad signature"),
        ("old", "more than 5 minutes"),
        ("missing", "missing X-Slack-Request-Timestamp or X-Slack-Signature"),
        ("other-body", "bad signature"),
    ],
)
async def test_a_request_slack_did_not_sign_just_now_is_refused(chat: _Chat, case: str, reason: str) -> None:
    decision_id = await _waiting(chat)
    body = urlencode({"payload": json.dumps({"type": "block_actions"})}).encode()
    headers = {
        "bad": _signed(body) | {"X-Slack-Signature": "v0=" + "0" * 64},
        "old": _signed(body, at=time.time() - 301),
        "missing": {"X-Slack-Signature": _signed(body)["X-Slack-Signature"]},
        "other-body": _signed(b"payload=%7B%7D"),
    }[case]
    async with chat.http.post(
        f"{chat.base}/hooks/slack/interactions", data=body, headers=headers
    ) as r:  # fmt: skip
        assert r.status == 401
        assert reason in (await r.json())["error"]
    assert await chat.responder.state_of(decision_id) == "awaiting_approval"


async def test_a_replayed_slack_request_is_refused(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    payload = {"type": "block_actions", "user": {"id": "U0ANA", "team_id": TEAM},
               "actions": [{"action_id": "reject", "value": decision_id}]}  # fmt: skip
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = _signed(body)
    first = await chat.press("reject", decision_id, "U0ANA", body=body, headers=headers)
    again = await chat.press("reject", decision_id, "U0ANA", body=body, headers=headers)
    assert (first.status, again.status) == (200, 401)
    await chat.drained()
    assert await _audit(chat, decision_id) == [(APPROVER, "rejected")]


async def test_an_oversized_slack_request_is_refused_before_it_is_read(chat: _Chat) -> None:
    body = b"payload=" + b"x" * (65 * 1024)
    r = await chat.press("approve", "dec-x", "U0ANA", body=body)
    assert r.status == 413


# --- Links -------------------------------------------------------------------------------------------------


def _link(chat: _Chat, decision_id: str, verb: str, operator: str, ttl_s: float = 600) -> str:
    assert chat.service.links is not None
    links = ApprovalLinks(chat.service.links.signer, chat.base, ttl_s)  # the service as the test reaches it
    url = links.url(decision_id, verb, operator, now=chat.clock().timestamp())
    assert chat.service.links.url(decision_id, verb, operator, now=0).startswith("https://responder.test/links/")
    return url


async def test_a_link_shows_on_get_without_acting_and_acts_once_on_post(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    url = _link(chat, decision_id, "approve", APPROVER)
    for _ in range(3):  # a mail scanner, a chat preview, the person
        async with chat.http.get(url) as r:
            assert r.status == 200 and '<form method="post">' in await r.text()
            assert r.headers["Referrer-Policy"] == "no-referrer" and r.headers["Cache-Control"] == "no-store"
    assert await chat.responder.state_of(decision_id) == "awaiting_approval"

    async with chat.http.post(url) as r:
        assert r.status == 200 and f"approved by {APPROVER}" in await r.text()
    approved = await chat.responder.decision("rotate-key")
    assert _applies(approved) == [("kill_flows", "done", True), ("rotate_key", "done", True)]
    assert await _audit(chat, decision_id) == [(APPROVER, "approve")]

    async with chat.http.post(url) as r:
        assert r.status == 409 and "used already" in await r.text()


async def test_a_used_reject_link_cannot_be_used_again_even_on_another_decision_state(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    url = _link(chat, decision_id, "reject", APPROVER)
    async with chat.http.post(url) as r:
        assert r.status == 200
    async with chat.http.post(url) as r:
        assert r.status == 409
    assert await _audit(chat, decision_id) == [(APPROVER, "rejected")]


async def test_an_expired_link_is_refused(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    url = _link(chat, decision_id, "approve", APPROVER, ttl_s=60)
    chat.clock.ahead = timedelta(seconds=61)
    async with chat.http.post(url) as r:
        assert r.status == 403 and "expired" in await r.text()
    assert await chat.responder.state_of(decision_id) == "awaiting_approval"


async def test_a_tampered_link_is_refused(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    url = _link(chat, decision_id, "approve", APPROVER)
    payload, _, mac = url.rpartition("/")[2].partition(".")
    tampered = f"{chat.base}/links/{payload}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
    async with chat.http.post(tampered) as r:
        assert r.status == 403 and "signature is wrong" in await r.text()
    assert await chat.responder.state_of(decision_id) == "awaiting_approval"


async def test_a_link_sent_to_a_viewer_does_not_approve(chat: _Chat) -> None:
    decision_id = await _waiting(chat)
    async with chat.http.post(_link(chat, decision_id, "approve", VIEWER)) as r:
        assert r.status == 403
    assert await _audit(chat, decision_id) == [(VIEWER, "chat.refused")]


# --- Approval timeouts -------------------------------------------------------------------------------------


async def _state_after(chat: _Chat, decision_id: str, ahead: timedelta, state: str) -> None:
    chat.clock.ahead = ahead

    async def reached() -> bool:
        return await chat.responder.state_of(decision_id) == state

    await _until(reached)


async def test_an_approval_not_given_in_time_is_rejected_by_the_policy(
    tmp_path: Path, receiver: _SlackReceiver
) -> None:
    async with _chat(tmp_path, receiver, "    approval_timeout: 15m\n    on_timeout: reject\n") as chat:
        decision_id = await _waiting(chat)
        chat.clock.ahead = timedelta(minutes=14)
        await asyncio.sleep(2.1)  # two passes of the lifecycle (every second) at this time
        assert await chat.responder.state_of(decision_id) == "awaiting_approval"
        await _state_after(chat, decision_id, timedelta(minutes=15, seconds=1), "rejected")
        assert await _audit(chat, decision_id) == [("policy:approval-timeout", "rejected")]
        assert chat.hub.batches == []


async def test_an_approval_not_given_in_time_is_given_by_the_policy_when_the_rule_says_so(
    tmp_path: Path, receiver: _SlackReceiver
) -> None:
    async with _chat(tmp_path, receiver, "    approval_timeout: 15m\n    on_timeout: approve\n") as chat:
        decision_id = await _waiting(chat)
        await _state_after(chat, decision_id, timedelta(minutes=16), "active")
        approved = await chat.responder.decision("rotate-key")
        assert _applies(approved) == [("kill_flows", "done", True), ("rotate_key", "done", True)]
        assert await _audit(chat, decision_id) == [("policy:approval-timeout", "approve")]


async def test_an_approval_not_given_in_time_escalates_then_is_rejected_after_as_long_again(
    tmp_path: Path, receiver: _SlackReceiver
) -> None:
    timeout = "    approval_timeout: 15m\n    on_timeout: escalate\n    escalate_to: secops-leads\n"
    async with _chat(tmp_path, receiver, timeout) as chat:
        decision_id = await _waiting(chat)
        chat.clock.ahead = timedelta(minutes=15, seconds=30)

        async def escalated() -> bool:
            return ("policy:approval-timeout", "escalated") in await _audit(chat, decision_id)

        await _until(escalated)
        notice = next(n for n in chat.notices if n.kind is NoticeKind.ESCALATED)
        assert (notice.decision_id, notice.channels, notice.actor) == (
            decision_id, ("secops-leads",), "policy:approval-timeout",
        )  # fmt: skip
        chat.clock.ahead = timedelta(minutes=29)  # 13.5 minutes after the escalation: still waiting
        await asyncio.sleep(2.1)  # two passes of the lifecycle (every second) at this time
        assert await chat.responder.state_of(decision_id) == "awaiting_approval"
        assert sum(n.kind is NoticeKind.ESCALATED for n in chat.notices) == 1  # escalated once

        await _state_after(chat, decision_id, timedelta(minutes=31), "rejected")
        assert await _audit(chat, decision_id) == [
            ("policy:approval-timeout", "escalated"), ("policy:approval-timeout", "rejected"),
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"type": "view_submission"}, "block_actions only"),
        ({"type": "block_actions", "user": {"id": "U0ANA"}, "actions": [{"action_id": "act", "value": "d"}]},
         "action_id must be one of"),
        ({"type": "block_actions", "user": {"id": "x" * 300}, "actions": [{"action_id": "approve", "value": "d"}]},
         "no Slack user id"),
        ({"type": "block_actions", "user": {"id": "U0ANA"}, "actions": [{"action_id": "approve", "value": "<a>"}]},
         "must be a decision id"),
    ],
)  # fmt: skip
async def test_a_signed_request_that_is_no_button_press_is_a_400_that_says_why(
    chat: _Chat, payload: dict[str, Any], reason: str
) -> None:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    async with chat.http.post(f"{chat.base}/hooks/slack/interactions", data=body, headers=_signed(body)) as r:
        assert r.status == 400
        assert reason in (await r.json())["error"]
