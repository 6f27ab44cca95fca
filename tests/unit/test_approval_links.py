"""Approval links: what a token carries, and every way one that is not ours is refused."""

from __future__ import annotations

import base64
import json

import pytest

from responder.service.links import LinkRefused, LinkSigner

KEY = b"k" * 32
NOW = 1_800_000_000.0


def test_a_link_carries_the_decision_verb_operator_and_expiry_it_was_issued_for() -> None:
    signer = LinkSigner(KEY)
    link = signer.read(signer.issue("dec-1", "approve", "alice@example.com", now=NOW, ttl_s=3600), NOW + 3599)
    assert (link.decision_id, link.verb, link.operator_id, link.expires_at) == (
        "dec-1", "approve", "alice@example.com", int(NOW + 3600),
    )  # fmt: skip
    other = signer.read(signer.issue("dec-1", "approve", "alice@example.com", now=NOW, ttl_s=3600), NOW)
    assert other.nonce != link.nonce  # each link is used once: each has its own nonce


def test_an_expired_link_is_refused() -> None:
    signer = LinkSigner(KEY)
    token = signer.issue("dec-1", "approve", "alice@example.com", now=NOW, ttl_s=60)
    with pytest.raises(LinkRefused, match="expired"):
        signer.read(token, NOW + 60)


def test_a_link_whose_payload_was_altered_is_refused() -> None:
    signer = LinkSigner(KEY)
    payload, _, mac = signer.issue("dec-1", "reject", "bob@example.com", now=NOW, ttl_s=60).partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["v"] = "undo"  # a reject link made into an undo
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(LinkRefused, match="signature is wrong"):
        signer.read(f"{forged}.{mac}", NOW)


def test_a_link_signed_with_another_key_is_refused() -> None:
    token = LinkSigner(b"x" * 32).issue("dec-1", "approve", "alice@example.com", now=NOW, ttl_s=60)
    with pytest.raises(LinkRefused, match="signature is wrong"):
        LinkSigner(KEY).read(token, NOW)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "%%%.abc", "abc.", "x" * 2000 + ".y", "YQ.Y"])
def test_what_is_no_link_at_all_is_refused(token: str) -> None:
    with pytest.raises(LinkRefused):
        LinkSigner(KEY).read(token, NOW)


def test_only_the_three_verbs_get_links() -> None:
    with pytest.raises(ValueError, match="verb must be one of"):
        LinkSigner(KEY).issue("dec-1", "act", "alice@example.com", now=NOW, ttl_s=60)
