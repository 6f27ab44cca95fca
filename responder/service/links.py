"""Signed one-time approval links, for channels without interactive buttons (Teams, the generic webhook).

A link names one decision, one verb (approve, reject, undo), the operator it was sent to, an expiry and a
nonce, signed with HMAC-SHA256 under `link_key`: `/links/{payload}.{mac}`, both base64url. The signature
stands in for a bearer token: whoever holds the link acts as that operator, once, until it expires, and only
while `chat.people` still gives the operator the role the verb needs.

GET only shows what the link would do and a button: mail and chat link scanners fetch links before a person
sees them, so a GET must never act. POST does it, once: the nonce is journaled, and a second use is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from aiohttp import web

from responder.journal import Journal
from responder.service.chat import NEEDS, ChatPeople
from responder.service.lifecycle import LifecycleError

log = logging.getLogger(__name__)

PATH = "/links/{token}"
MAX_TOKEN_CHARS = 1024
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the link is the credential: never pass it on in a Referer
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


class LinkRefused(Exception):
    """A link that is not ours, was altered, or has expired: the reason, one line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """What a link, once verified, lets its holder do."""

    decision_id: str
    verb: str
    operator_id: str
    expires_at: int
    nonce: str


@dataclass(frozen=True, slots=True)
class LinkSigner:
    key: bytes

    def token(self, link: Link) -> str:
        claims = {"d": link.decision_id, "v": link.verb, "o": link.operator_id, "e": link.expires_at, "n": link.nonce}
        payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def issue(self, decision_id: str, verb: str, operator_id: str, *, now: float, ttl_s: float) -> str:
        """A fresh token for `operator_id` to `verb` the decision until `now + ttl_s`."""
        if verb not in NEEDS:
            raise ValueError(f"verb must be one of {sorted(NEEDS)}")
        link = Link(
            decision_id=decision_id, verb=verb, operator_id=operator_id, expires_at=int(now + ttl_s),
            nonce=secrets.token_urlsafe(16),
        )  # fmt: skip
        return self.token(link)

    def read(self, token: str, now: float) -> Link:
        """The link this token carries; `LinkRefused` when it is malformed, altered or expired."""
        payload, _, mac = token.partition(".")
        if len(token) > MAX_TOKEN_CHARS or not (_B64.match(payload) and _B64.match(mac)):
            raise LinkRefused("this is not an approval link")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise LinkRefused("this is not an approval link") from None
        if not hmac.compare_digest(given, self._mac(payload)):
            raise LinkRefused("this link's signature is wrong: it was altered or not made here")
        claims = json.loads(_unb64(payload))  # ours: signed by us, so well-formed
        link = Link(
            decision_id=claims["d"], verb=claims["v"], operator_id=claims["o"], expires_at=int(claims["e"]),
            nonce=claims["n"],
        )  # fmt: skip
        if now >= link.expires_at:
            raise LinkRefused("this link has expired: ask for a new one or use the console")
        return link

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self.key, b"responder-link-v1:" + payload.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class ApprovalLinks:
    """What a notifier asks for a link: `url(decision, verb, operator, now)` under the service's public URL."""

    signer: LinkSigner
    base_url: str
    ttl_s: float

    def url(self, decision_id: str, verb: str, operator_id: str, *, now: float) -> str:
        token = self.signer.issue(decision_id, verb, operator_id, now=now, ttl_s=self.ttl_s)
        return f"{self.base_url.rstrip('/')}/links/{token}"


class Lifecycle(Protocol):
    async def approve(self, decision_id: str, actor: str) -> None: ...
    async def reject(self, decision_id: str, actor: str) -> None: ...
    async def undo(self, decision_id: str, actor: str) -> None: ...


def link_routes(
    signer: LinkSigner, *, people: ChatPeople, lifecycle: Lifecycle, journal: Journal, clock: Callable[[], datetime]
) -> list[web.RouteDef]:
    """GET and POST /links/{token}. Guarded by the link's signature, not by `Operators`: the person who
    follows the link from Teams or a mail has no bearer token in their browser."""

    def verified(request: web.Request) -> Link | web.Response:
        try:
            return signer.read(request.match_info["token"], clock().timestamp())
        except LinkRefused as exc:
            return _page(403, "Link refused", str(exc))

    async def show(request: web.Request) -> web.Response:
        link = verified(request)
        if isinstance(link, web.Response):
            return link
        decision = await journal.decision(link.decision_id)
        what = f"{decision.response} on {decision.subject}, {decision.state.value}" if decision else "not found"
        form = f'<form method="post"><button type="submit">{html.escape(link.verb.capitalize())}</button></form>'
        return _page(
            200, f"{link.verb.capitalize()} decision {link.decision_id}?",
            f"Decision {link.decision_id} ({what}). You act as {link.operator_id}; this link works once.", form,
        )  # fmt: skip

    async def act(request: web.Request) -> web.Response:
        link = verified(request)
        if isinstance(link, web.Response):
            return link
        now = clock()
        operator = people.operator(link.operator_id, "link")
        needs = NEEDS[link.verb]
        if operator is None or not operator.may(needs):
            role = operator.role.name.lower() if operator else "not in chat.people"
            why = f"{link.operator_id} is {role}: {link.verb} needs {needs.name.lower()}"
            detail = {"verb": link.verb, "why": why, "via": "link"}
            await journal.audit(now.isoformat(), link.operator_id, "chat.refused", link.decision_id, detail)
            return _page(403, "Not done", why)
        keep_until = datetime.fromtimestamp(link.expires_at, now.tzinfo).isoformat()
        if not await journal.use_once(f"link:{link.nonce}", now.isoformat(), keep_until):
            return _page(409, "Not done", "this link was used already: each link works once")
        verbs: Mapping[str, Callable[[str, str], Awaitable[None]]] = {
            "approve": lifecycle.approve, "reject": lifecycle.reject, "undo": lifecycle.undo,
        }  # fmt: skip
        try:
            await verbs[link.verb](link.decision_id, operator.id)
        except LifecycleError as exc:
            return _page(409, "Not done", str(exc))
        log.info("decision %s: %s through a link by %s", link.decision_id, link.verb, operator.id)
        done = {"approve": "Approved", "reject": "Rejected", "undo": "Undone"}[link.verb]
        return _page(200, f"{done}", f"Decision {link.decision_id}: {done.lower()} by {operator.id}.")

    return [web.get(PATH, show, allow_head=False), web.post(PATH, act)]


def _page(status: int, title: str, text: str, form: str = "") -> web.Response:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:1rem system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}</style>"
        f"<main><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{form}</main></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=_HEADERS)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
