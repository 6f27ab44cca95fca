"""Slack's interactive buttons: Approve, Reject and Undo pressed on a notice, received on
POST /hooks/slack/interactions.

A request counts only with Slack's signature (HMAC-SHA256 of `v0:{timestamp}:{body}` with the app's signing
secret), a timestamp within five minutes, and a signature not seen before (journaled, so a replay is
refused by every instance and after a restart). The Slack user is mapped to an operator (`chat.slack.users`,
`chat.people`); one unmapped or of too low a role is told so, privately, and nothing is done. Slack wants
its answer within 3 s: the request is acknowledged at once and the outcome replaces the message through
its `response_url`, which must lie under the configured prefix (a payload does not choose where we post).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from responder.journal import DecisionState, Journal
from responder.service.chat import NEEDS, ChatPeople
from responder.service.lifecycle import LifecycleError

log = logging.getLogger(__name__)

PATH = "/hooks/slack/interactions"
MAX_BODY_BYTES = 64 * 1024  # a block_actions payload is a few KB; the whole message comes with it
MAX_SKEW_S = 300  # Slack's own advice: refuse requests more than five minutes old
POST_TIMEOUT_S = 5.0
_DECISION_ID = re.compile(r"^[\w.:-]{1,128}$")
_SLACK_ID = re.compile(r"^[A-Z0-9]{1,32}$")  # U0123ABCD, W0123ABCD, T0123ABCD: what may go into the audit trail


class NotFromSlack(Exception):
    """A request that is not Slack's (bad or missing signature, too old, replayed): the reason, for a 401."""


@dataclass(frozen=True, slots=True)
class SlackSignature:
    """Slack's request signing (https://api.slack.com/authentication/verifying-requests-from-slack)."""

    secret: bytes

    def sign(self, timestamp: str, body: bytes) -> str:
        base = b"v0:" + timestamp.encode() + b":" + body
        return "v0=" + hmac.new(self.secret, base, hashlib.sha256).hexdigest()

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> str:
        """The request's signature when it is Slack's and recent; `NotFromSlack` otherwise. (Whether it was seen
        before is the caller's to check: that needs the journal.)"""
        timestamp = headers.get("X-Slack-Request-Timestamp", "")
        given = headers.get("X-Slack-Signature", "")
        if not timestamp or not given:
            raise NotFromSlack("missing X-Slack-Request-Timestamp or X-Slack-Signature")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise NotFromSlack("X-Slack-Request-Timestamp is not a Unix time")
        if abs(now - int(timestamp)) > MAX_SKEW_S:
            raise NotFromSlack("request timestamp is more than 5 minutes from now")
        if not hmac.compare_digest(given.encode(), self.sign(timestamp, body).encode()):
            raise NotFromSlack("bad signature")
        return given


class Lifecycle(Protocol):
    async def approve(self, decision_id: str, actor: str) -> None: ...
    async def reject(self, decision_id: str, actor: str) -> None: ...
    async def undo(self, decision_id: str, actor: str) -> None: ...


class ResponseUrl(Protocol):
    async def post(self, url: str, message: Mapping[str, object]) -> None:
        """Post `message` to a Slack response_url; raises on failure."""
        ...


class HttpResponseUrl:
    """Posts to response_urls with one pooled client, each post within `POST_TIMEOUT_S`."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    async def post(self, url: str, message: Mapping[str, object]) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S))
        async with self._http.post(url, json=dict(message)) as response:
            if response.status >= 300:
                raise RuntimeError(f"response_url answered {response.status}")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


@dataclass(frozen=True, slots=True)
class _Press:
    """One button press, as the payload says it (not yet trusted beyond the signature)."""

    verb: str
    decision_id: str
    user: str
    team: str | None
    response_url: str | None


class SlackInteractions:
    """The route, and the background work it starts (owned here, cancelled on `close`)."""

    def __init__(
        self,
        signature: SlackSignature,
        *,
        users: Mapping[str, str],
        people: ChatPeople,
        lifecycle: Lifecycle,
        journal: Journal,
        clock: Callable[[], datetime],
        team_id: str | None = None,
        response_url_prefix: str = "https://hooks.slack.com/",
        responder: ResponseUrl | None = None,
    ) -> None:
        self._signature = signature
        self._users = dict(users)
        self._people = people
        self._lifecycle = lifecycle
        self._journal = journal
        self._clock = clock
        self._team_id = team_id
        self._prefix = response_url_prefix
        self._responder = responder or HttpResponseUrl()
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.handle)]

    async def close(self) -> None:
        """Let the presses being carried out finish (briefly), then stop what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=POST_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if isinstance(self._responder, HttpResponseUrl):
            await self._responder.close()

    async def drained(self) -> None:
        """Wait for every press being carried out (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _text(413, "request body too large")
        body = await _read_limited(request)
        if body is None:
            return _text(413, "request body too large")
        now = self._clock()
        try:
            signed = self._signature.verify(request.headers, body, now.timestamp())
        except NotFromSlack as exc:
            log.warning("slack interaction refused: %s", exc)
            return _text(401, str(exc))
        # Kept while its timestamp could still pass: after that, the timestamp check refuses it.
        keep_until = (now + timedelta(seconds=2 * MAX_SKEW_S)).isoformat()
        if not await self._journal.use_once(f"slack:{signed}", now.isoformat(), keep_until):
            log.warning("slack interaction refused: replayed")
            return _text(401, "replayed request")
        press = _press(body)
        if isinstance(press, str):
            return _text(400, press)
        return await self._answer(press, now)

    async def _answer(self, press: _Press, now: datetime) -> web.Response:
        operator_id = self._users.get(press.user)
        operator = self._people.operator(operator_id, "slack") if operator_id else None
        needs = NEEDS[press.verb]
        why: str | None = None
        if self._team_id is not None and press.team != self._team_id:
            why = "this Slack workspace is not the one the responder trusts"
        elif operator is None:
            why = "your Slack user is not mapped to a responder operator (chat.slack.users and chat.people)"
        elif not operator.may(needs):
            why = f"{operator.id} is a {operator.role.name.lower()}: {press.verb} needs {needs.name.lower()}"
        if why is not None or operator is None:
            detail = {"verb": press.verb, "slack_user": press.user, "team": press.team, "why": why, "via": "slack"}
            await self._journal.audit(now.isoformat(), operator_id or f"slack:{press.user}", "chat.refused",
                                      press.decision_id, detail)  # fmt: skip
            message = {"response_type": "ephemeral", "replace_original": False, "text": f"Not done: {why}."}
            self._start(self._tell(press, message))
            return web.json_response(message)
        self._start(self._carry_out(press, operator.id))
        return web.Response(status=200)

    def _start(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _carry_out(self, press: _Press, actor: str) -> None:
        verbs = {"approve": self._lifecycle.approve, "reject": self._lifecycle.reject, "undo": self._undo}
        try:
            await verbs[press.verb](press.decision_id, actor)
        except LifecycleError as exc:
            text = f"Not done: {exc}."
            replace = False
        except Exception:
            log.exception("slack %s of %s by %s failed", press.verb, press.decision_id, actor)
            text, replace = f"{press.verb} of {press.decision_id} failed; see the responder's log.", False
        else:
            done = {"approve": "Approved", "reject": "Rejected", "undo": "Undone"}[press.verb]
            text, replace = f"{done} by {actor}: decision {press.decision_id}.", True
            log.info("decision %s: %s from slack by %s", press.decision_id, press.verb, actor)
        message: dict[str, object] = {"replace_original": replace, "text": text}
        if not replace:
            message["response_type"] = "ephemeral"
        await self._tell(press, message)

    async def _undo(self, decision_id: str, actor: str) -> None:
        """Undo a decision in force; a waiting one is rejected with Reject (an undo would reject it too, but
        the button said something else)."""
        decision = await self._journal.decision(decision_id)
        if decision is not None and decision.state is DecisionState.AWAITING_APPROVAL:
            raise LifecycleError(f"decision {decision_id} waits for approval: reject it instead")
        await self._lifecycle.undo(decision_id, actor)

    async def _tell(self, press: _Press, message: Mapping[str, object]) -> None:
        url = press.response_url
        if not url or not url.startswith(self._prefix):
            if url:
                log.warning("slack response_url outside %s not used", self._prefix)
            return
        try:
            async with asyncio.timeout(POST_TIMEOUT_S):
                await self._responder.post(url, message)
        except Exception as exc:  # the decision is done or refused either way; only the message is stale
            log.warning("posting the outcome to slack failed: %s", exc)


async def _read_limited(request: web.Request) -> bytes | None:
    """The body, or None once it passes `MAX_BODY_BYTES` (a chunked body has no Content-Length to refuse)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _press(body: bytes) -> _Press | str:  # noqa: PLR0911 - one early answer per thing wrong
    """The button press in a signed body, or what is wrong with it (for a 400)."""
    with contextlib.suppress(UnicodeDecodeError, ValueError):
        fields = parse_qs(body.decode(), strict_parsing=True, max_num_fields=16)
        payload: Any = json.loads(fields["payload"][0]) if "payload" in fields else None
        if not isinstance(payload, dict):
            return "expected a form field payload holding a JSON object"
        if payload.get("type") != "block_actions":
            return f"interaction type {str(payload.get('type'))[:40]!r} is not handled (block_actions only)"
        actions, user = payload.get("actions"), payload.get("user")
        if not (isinstance(actions, list) and actions and isinstance(actions[0], dict) and isinstance(user, dict)):
            return "block_actions without actions or user"
        action = actions[0]
        verb, value = action.get("action_id"), action.get("value")
        if verb not in NEEDS:
            return f"action_id must be one of {sorted(NEEDS)}"
        if not (isinstance(value, str) and _DECISION_ID.match(value)):
            return "the action's value must be a decision id"
        workspace = payload.get("team")
        team = user.get("team_id") or (workspace.get("id") if isinstance(workspace, dict) else None)
        user_id = user.get("id")
        if not (isinstance(user_id, str) and _SLACK_ID.match(user_id)):
            return "the payload names no Slack user id"
        url = payload.get("response_url")
        return _Press(
            verb=verb, decision_id=value, user=user_id,
            team=team if isinstance(team, str) and _SLACK_ID.match(team) else None,
            response_url=url if isinstance(url, str) else None,
        )  # fmt: skip
    return "expected application/x-www-form-urlencoded with a JSON payload"


def _text(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
