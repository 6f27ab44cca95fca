"""Contract receivers for the notification channels: NOT Slack, Teams or an SMTP relay, but local servers
that hold the responder to each vendor's documented contract.

- Slack incoming webhooks (https://api.slack.com/messaging/webhooks): POST JSON with `text` and optional
  `blocks`; the answer is `200 ok` (text), or an error status with a text body; rate limits answer 429 with
  `Retry-After` (https://api.slack.com/apis/rate-limits).
- Slack `chat.postMessage` (https://api.slack.com/methods/chat.postMessage): `Authorization: Bearer xoxb-...`,
  JSON with `channel` and `text`/`blocks`; always HTTP 200 with `{"ok": true, "ts": ...}` or
  `{"ok": false, "error": "invalid_auth" | "channel_not_found" | ...}`; 429 with `Retry-After` when rate
  limited. Buttons are Block Kit `actions` blocks (https://api.slack.com/reference/block-kit/blocks#actions)
  of `button` elements (`action_id`, `value`, `text` plain_text; at most 25 elements).
- Teams workflow webhooks (Power Automate "When a Teams webhook request is received" with "Post card in a chat
  or channel"; the replacement of Office 365 connectors: https://learn.microsoft.com/en-us/microsoftteams/
  platform/webhooks-and-connectors/how-to/add-incoming-webhook, and for the body the workflow reads,
  `triggerOutputs()?['body']?['attachments']?[0]?['content']`): `{"type": "message", "attachments":
  [{"contentType": "application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard>}]}`; the card needs
  `type: AdaptiveCard`, a `version` every Teams client renders (1.4 and below; https://adaptivecards.io/
  explorer/) and a `body` of elements with a `type`; the flow answers 202 Accepted.
- The generic webhook: the responder's own contract (README, Notifications): the signature is `v1=` +
  hex(HMAC-SHA256(secret, f"{timestamp}.{body}")), the timestamp within 300 s of now, compared in
  constant time.
- SMTP: a real server (aiosmtpd) on loopback that requires STARTTLS before MAIL, with a certificate made in
  the test (`tests/support/tls.py`).

Each receiver records what it accepted (`received`), can be told to fail (`fail(status, count,
retry_after)`) or to hang (`hang = True`: it never answers).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as Mail
from typing import Any

from aiohttp import web

from tests.support.tls import Issued

WINDOW_S = 300


@dataclass
class Receiver:
    """One HTTP receiver's recorded deliveries and its steering."""

    received: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    faults: deque[tuple[int, float | None]] = field(default_factory=deque)
    hang: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        self.faults.extend([(status, retry_after)] * count)

    async def _steer(self) -> web.Response | None:
        if self.hang:
            await asyncio.Event().wait()
        if self.faults:
            status, retry_after = self.faults.popleft()
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return web.Response(status=status, text="fault", headers=headers)
        return None

    def _accept(self, body: dict[str, Any]) -> None:
        self.received.append(body)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received


class SlackContract(Receiver):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/services/T0/B0/hook", self.webhook), web.post("/api/chat.postMessage", self.post_message)]

    async def webhook(self, request: web.Request) -> web.Response:
        if (fault := await self._steer()) is not None:
            return fault
        body = await request.json()
        if not isinstance(body.get("text"), str) or not body["text"]:
            self.refused.append("no text")
            return web.Response(status=400, text="no_text")
        if "blocks" in body and not _valid_blocks(body["blocks"]):
            self.refused.append("invalid blocks")
            return web.Response(status=400, text="invalid_blocks")
        self._accept(body)
        return web.Response(text="ok")

    async def post_message(self, request: web.Request) -> web.Response:
        if (fault := await self._steer()) is not None:
            return fault
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused.append("invalid_auth")
            return web.json_response({"ok": False, "error": "invalid_auth"})
        body = await request.json()
        if not body.get("channel"):
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if not (body.get("text") or body.get("blocks")):
            return web.json_response({"ok": False, "error": "no_text"})
        if "blocks" in body and not _valid_blocks(body["blocks"]):
            self.refused.append("invalid_blocks")
            return web.json_response({"ok": False, "error": "invalid_blocks"})
        self._accept(body)
        return web.json_response({"ok": True, "channel": body["channel"], "ts": f"{time.time():.6f}"})


def _valid_blocks(blocks: object) -> bool:
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in {"section", "actions", "context", "header"}:
            return False
        if block["type"] == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                return False
            for e in elements:
                if e.get("type") != "button" or not e.get("action_id") or e.get("text", {}).get("type") != "plain_text":
                    return False
                if len(str(e.get("value", ""))) > 2000:
                    return False
    return True


def slack_buttons(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(action_id, value) of every button in a Slack message."""
    return [
        (e["action_id"], e["value"]) for b in body.get("blocks", []) if b["type"] == "actions" for e in b["elements"]
    ]


class TeamsContract(Receiver):
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/workflows/abc/triggers/manual/paths/invoke", self.invoke)]

    async def invoke(self, request: web.Request) -> web.Response:
        if (fault := await self._steer()) is not None:
            return fault
        body = await request.json()
        problem = _card_problem(body)
        if problem is not None:
            self.refused.append(problem)
            return web.json_response({"error": {"code": "InvalidTemplate", "message": problem}}, status=400)
        self._accept(body)
        return web.Response(status=202)


def _card_problem(body: dict[str, Any]) -> str | None:  # noqa: PLR0911 - one return per rule of the contract
    if body.get("type") != "message":
        return "type must be message"
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return "attachments must be a non-empty list"
    a = attachments[0]
    if a.get("contentType") != "application/vnd.microsoft.card.adaptive":
        return "contentType must be application/vnd.microsoft.card.adaptive"
    card = a.get("content") or {}
    if card.get("type") != "AdaptiveCard":
        return "content.type must be AdaptiveCard"
    try:
        major, minor = (int(x) for x in str(card.get("version", "")).split("."))
    except ValueError:
        return "content.version missing"
    if (major, minor) > (1, 4):
        return "content.version above 1.4 does not render in every Teams client"
    if not isinstance(card.get("body"), list) or not all(isinstance(e, dict) and e.get("type") for e in card["body"]):
        return "content.body must be a list of typed elements"
    for action in card.get("actions", []):
        if action.get("type") == "Action.OpenUrl" and not str(action.get("url", "")).startswith(
            ("https://", "http://")
        ):
            return "Action.OpenUrl needs a url"
    return None


class SignedContract(Receiver):
    """The generic webhook receiver, verifying as the README tells a receiver to."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret.encode()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/responder", self.receive)]

    async def receive(self, request: web.Request) -> web.Response:
        if (fault := await self._steer()) is not None:
            return fault
        raw = await request.read()
        timestamp = request.headers.get("X-Responder-Timestamp", "")
        given = request.headers.get("X-Responder-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > WINDOW_S:
            self.refused.append("timestamp outside the window")
            return web.Response(status=401, text="stale")
        expected = "v1=" + hmac.new(self.secret, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given):
            self.refused.append("bad signature")
            return web.Response(status=401, text="bad signature")
        self._accept(json.loads(raw))
        return web.Response(status=204)


@asynccontextmanager
async def serving(*receivers: Receiver) -> AsyncIterator[str]:
    """The receivers' routes on one loopback port; yields the base URL."""
    app = web.Application()
    for r in receivers:
        app.add_routes(r.routes())  # type: ignore[attr-defined]
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Mailbox:
    messages: list[Mail] = field(default_factory=list)
    starttls_used: list[bool] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        self.starttls_used.append(session.ssl is not None)
        return "250 OK"


@asynccontextmanager
async def smtp_server(issued: Issued) -> AsyncIterator[tuple[int, Mailbox]]:
    """A real SMTP server on 127.0.0.1 that requires STARTTLS (aiosmtpd); yields (port, mailbox)."""
    from aiosmtpd.controller import Controller

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    mailbox = Mailbox()
    with socket.socket() as probe:  # aiosmtpd checks its readiness by connecting: it needs the port up front
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True, ready_timeout=5
    )
    await asyncio.to_thread(controller.start)
    try:
        yield port, mailbox
    finally:
        await asyncio.to_thread(controller.stop)
