"""Where messages go: Slack (incoming webhook, bot token), Microsoft Teams (workflow webhook), a signed
generic webhook, e-mail. Each is a small adapter behind `Channel`; every call has a timeout, and no secret
(a webhook URL, a token, a password) is ever logged or put in an error.

E-mail goes through the standard library's smtplib in a thread rather than an async SMTP client: STARTTLS
and authentication are there already, a notification is a message now and then (not a stream), the socket
timeout bounds the thread, and the service needs no further dependency.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from typing import Any, Protocol

import aiohttp
from pydantic import SecretStr

from responder.config import (
    EmailChannel,
    NotifyChannel,
    SlackBotChannel,
    SlackWebhookChannel,
    TeamsChannel,
    WebhookChannel,
)
from responder.notify.message import Message

_BUTTON_LABELS = {"approve": "Approve", "reject": "Reject", "undo": "Undo"}
_BUTTON_STYLES = {"approve": "primary", "reject": "danger", "undo": "danger"}


class DeliveryFailed(Exception):
    """A channel did not take the message. `retry_after`: the receiver's own wait (a 429's Retry-After);
    `permanent`: trying again cannot help (a 4xx other than 408/429)."""

    def __init__(self, reason: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.permanent = permanent


class Channel(Protocol):
    name: str

    async def send(self, message: Message) -> None:
        """Deliver one message, within the channel's timeout, or raise DeliveryFailed."""
        ...

    async def close(self) -> None: ...


class _Http:
    """An HTTP channel's session (opened at first use) and its answer handling."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self._timeout = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.post(url, data=body, headers={"Content-Type": "application/json"} | headers) as r,
            ):
                text = await r.text()
                if r.status == 429:
                    raise DeliveryFailed("429 Too Many Requests", retry_after=_retry_after(r.headers))
                if r.status >= 500 or r.status == 408:
                    raise DeliveryFailed(f"HTTP {r.status}")
                if r.status >= 400:
                    raise DeliveryFailed(f"HTTP {r.status}: {text[:200]}", permanent=True)
                return json.loads(text) if text.startswith("{") else text
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self._timeout:g}s") from None
        except aiohttp.ClientError as exc:
            # The exception's text may name the URL, which is the secret of a webhook: only its kind.
            raise DeliveryFailed(f"connection failed ({type(exc).__name__})") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _required(secret: SecretStr | None, name: str) -> SecretStr:
    if secret is None:  # the configuration refuses this; a channel built by hand must not either
        raise ValueError(f"the channel needs {name}")
    return secret


def _retry_after(headers: Any) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


def slack_blocks(message: Message) -> list[dict[str, Any]]:
    """Block Kit: a section per message part; the buttons as `actions` (action_id approve|reject|undo,
    value the decision id), which the service receives on /hooks/slack/interactions."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(message.title)}*"}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{n}*\n{_escape(v)}"[:2000]} for n, v in message.facts[:10]],
        },
    ]
    parts = [f"Undo: {_escape(message.undo)}"] if message.undo else []
    parts += [f"<{message.link}|Open in the console>"] if message.link else []
    if parts:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(parts)}]})
    if message.links:
        # For an incoming webhook, which drops the buttons: the signed links instead.
        links = " · ".join(f"<{url}|{_escape(label)}>" for label, url in message.links)
        blocks.append({"type": "section", "block_id": "links", "text": {"type": "mrkdwn", "text": links[:3000]}})
    if message.buttons and message.decision_id:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"decision:{message.decision_id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": b,
                        "value": message.decision_id,
                        "style": _BUTTON_STYLES[b],
                        "text": {"type": "plain_text", "text": _BUTTON_LABELS[b]},
                    }
                    for b in message.buttons
                ],
            }
        )
    return blocks


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackWebhook(_Http):
    """An incoming webhook: `text` (the notification's fallback) and `blocks`. It takes no buttons that
    call back (a webhook app has no interactivity of its own unless configured), so they are left off."""

    def __init__(self, name: str, config: SlackWebhookChannel) -> None:
        super().__init__(name, config.timeout_s)
        self._url = _required(config.url, "url")

    async def send(self, message: Message) -> None:
        blocks = [b for b in slack_blocks(message) if b["type"] != "actions"]
        body = json.dumps({"text": message.title, "blocks": blocks}).encode()
        await self._post(self._url.get_secret_value(), body, {})


class SlackBot(_Http):
    """`chat.postMessage` with the bot token: Slack answers 200 with `{"ok": false, "error": ...}` on a
    refusal, which is permanent except `ratelimited`."""

    def __init__(self, name: str, config: SlackBotChannel) -> None:
        super().__init__(name, config.timeout_s)
        self._token, self._channel = _required(config.token, "token"), config.channel
        self._url = config.api_url.rstrip("/") + "/chat.postMessage"

    async def send(self, message: Message) -> None:
        # The buttons act as the Slack user who presses them: no signed links beside them.
        blocks = [b for b in slack_blocks(message) if b.get("block_id") != "links"]
        body = json.dumps({"channel": self._channel, "text": message.title, "blocks": blocks})
        headers = {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "Content-Type": "application/json; charset=utf-8",
        }
        answer = await self._post(self._url, body.encode(), headers)
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error", "no ok in the answer") if isinstance(answer, dict) else "not JSON"
            raise DeliveryFailed(f"Slack refused: {error}", permanent=error != "ratelimited")


def adaptive_card(message: Message) -> dict[str, Any]:
    """An Adaptive Card 1.4 (what Teams renders): a title, a FactSet, the undo line; the signed approval links
    and the console as Action.OpenUrl (a workflow's card has no buttons that call the service back)."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": message.title, "weight": "Bolder", "size": "Medium", "wrap": True},
        {"type": "FactSet", "facts": [{"title": n, "value": v} for n, v in message.facts]},
    ]
    if message.undo:
        body.append({"type": "TextBlock", "text": f"Undo: {message.undo}", "wrap": True, "isSubtle": True})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    actions = [{"type": "Action.OpenUrl", "title": label, "url": url} for label, url in message.links]
    if message.link:
        actions.append({"type": "Action.OpenUrl", "title": "Open in the console", "url": message.link})
    if actions:
        card["actions"] = actions
    return card


class Teams(_Http):
    """A Teams workflow webhook (Power Automate, "When a Teams webhook request is received"): a `message`
    with one Adaptive Card attachment; the workflow answers 202 Accepted."""

    def __init__(self, name: str, config: TeamsChannel) -> None:
        super().__init__(name, config.timeout_s)
        self._url = _required(config.url, "url")

    async def send(self, message: Message) -> None:
        body = {
            "type": "message",
            "attachments": [
                {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                 "content": adaptive_card(message)}
            ],
        }  # fmt: skip
        await self._post(self._url.get_secret_value(), json.dumps(body).encode(), {})


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """`v1=` and the hex HMAC-SHA256 of `TIMESTAMP.BODY`: what a receiver recomputes and compares."""
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Webhook(_Http):
    """Any receiver: the message as JSON, signed (`X-Responder-Timestamp`, `X-Responder-Signature`)."""

    def __init__(self, name: str, config: WebhookChannel, clock: Any = time.time) -> None:
        super().__init__(name, config.timeout_s)
        self._url, self._secret, self._clock = config.url, _required(config.secret, "secret"), clock

    async def send(self, message: Message) -> None:
        body = json.dumps(message.to_dict() | {"text": message.text}, sort_keys=True).encode()
        timestamp = str(int(self._clock()))
        headers = {
            "X-Responder-Timestamp": timestamp,
            "X-Responder-Signature": signature(self._secret.get_secret_value().encode(), timestamp, body),
        }
        await self._post(self._url, body, headers)


class Email:
    """SMTP: STARTTLS unless told otherwise for a loopback server; AUTH when a user is configured."""

    def __init__(self, name: str, config: EmailChannel) -> None:
        self.name = name
        self._config = config

    async def send(self, message: Message) -> None:
        c = self._config
        mail = EmailMessage()
        mail["Subject"] = message.title[:200]
        mail["From"] = c.sender
        mail["To"] = ", ".join(c.to)
        mail.set_content(message.text + (f"\n\nConsole: {message.link}" if message.link else "") + "\n")
        try:
            # The socket timeout ends the thread's wait; the outer one is for the thread's start as well.
            async with asyncio.timeout(c.timeout_s * 3):
                await asyncio.to_thread(_smtp_send, c, mail)
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {c.timeout_s:g}s") from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"SMTP {exc.smtp_code}", permanent=500 <= exc.smtp_code < 600) from None
        except smtplib.SMTPNotSupportedError:
            raise DeliveryFailed("the server does not offer STARTTLS", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP failed ({type(exc).__name__}: {exc})"[:300]) from None

    async def close(self) -> None:
        return None


def _smtp_send(c: EmailChannel, mail: EmailMessage) -> None:
    with smtplib.SMTP(c.host, c.port, timeout=c.timeout_s) as smtp:
        if c.starttls:
            context = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
            smtp.starttls(context=context)
        if c.username is not None and c.password is not None:
            smtp.login(c.username, c.password.get_secret_value())
        smtp.send_message(mail)


def open_channel(name: str, config: NotifyChannel) -> Channel:
    match config:
        case SlackWebhookChannel():
            return SlackWebhook(name, config)
        case SlackBotChannel():
            return SlackBot(name, config)
        case TeamsChannel():
            return Teams(name, config)
        case WebhookChannel():
            return Webhook(name, config)
        case EmailChannel():
            return Email(name, config)
