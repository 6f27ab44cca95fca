"""Notifications delivered to local receivers that implement each channel's documented contract
(tests/support/chat_contracts.py), through the real outbox in a SQLite journal: Slack (webhook and bot
token), Teams, the signed webhook and SMTP with STARTTLS; retries, rate limit, de-duplication, a restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from responder.config import NotifyChannel
from responder.journal import Journal, open_journal
from responder.notify import NoticeKind
from responder.notify.about import decision_notice
from responder.notify.channels import open_channel
from responder.notify.message import Message
from responder.notify.notifier import Notifier
from responder.notify.outbox import Outbox, OutboxState, Outgoing
from responder.notify.routing import Route
from tests.support.chat_contracts import (
    SignedContract,
    SlackContract,
    TeamsContract,
    serving,
    slack_buttons,
    smtp_server,
)
from tests.support.tls import TestCA

BOT_TOKEN = "xoxb-1234-5678-notifications-test"
SECRET = "generic-webhook-signing-secret-0123"
BODY = {
    "score": 80.0,
    "contributions": [{"rule": "okta-user-reported-suspicious", "points": 80, "reason": "reported by alice"}],
    "actions": [{"type": "remove_peer", "hub": "hub1", "peer_key": "JfQ7FIatlaE5jj7rPYO8QBABX8yb7bNbQy4AKY1QIfc="}],
}
CHANNEL = TypeAdapter(NotifyChannel)


def _notice(kind: NoticeKind, decision_id: str = "d-1", **detail: object):  # type: ignore[no-untyped-def]
    return decision_notice(
        kind, at=datetime.now(UTC), decision_id=decision_id, subject="user:alice@example.com", response="cut-off",
        body=BODY, state="active", **detail,
    )  # fmt: skip


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        yield j
    finally:
        await j.close()


class _Running:
    def __init__(self, notifier: Notifier, counts: dict[tuple[str, str], int]) -> None:
        self.notifier, self.counts = notifier, counts


@contextlib.asynccontextmanager
async def _notifier(
    journal: Journal, channels: Mapping[str, dict[str, object]], **options: object
) -> AsyncIterator[_Running]:
    counts: dict[tuple[str, str], int] = {}

    def count(channel: str, outcome: str) -> None:
        counts[channel, outcome] = counts.get((channel, outcome), 0) + 1

    opened = {name: open_channel(name, CHANNEL.validate_python(c)) for name, c in channels.items()}
    notifier = Notifier(
        opened, [Route(tuple(channels))], Outbox(journal, "test"), clock=lambda: datetime.now(UTC), count=count,
        **({"retry_min_s": 0.05, "retry_max_s": 0.2} | options),  # type: ignore[arg-type]
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.run(stop))
    try:
        yield _Running(notifier, counts)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_slack_bot_messages_carry_the_buttons_and_the_token_and_webhook_messages_the_text(
    journal: Journal,
) -> None:
    slack = SlackContract(BOT_TOKEN)
    async with serving(slack) as base:
        channels = {
            "bot": {"type": "slack_bot", "channel": "C0123", "token": BOT_TOKEN, "api_url": f"{base}/api"},
            "hook": {"type": "slack_webhook", "url": f"{base}/services/T0/B0/hook"},
        }
        async with _notifier(journal, channels) as running:
            running.notifier.emit(_notice(NoticeKind.AWAITING_APPROVAL, "d-wait"))
            running.notifier.emit(_notice(NoticeKind.ENFORCED, "d-done", hubs={"hub1": True}))
            received = await slack.wait_for(4)
    bot = [m for m in received if "channel" in m]
    hook = [m for m in received if "channel" not in m]
    assert sorted(b for m in bot for b in slack_buttons(m)) == [
        ("approve", "d-wait"), ("reject", "d-wait"), ("undo", "d-done"),
    ]  # fmt: skip
    assert all(m["channel"] == "C0123" for m in bot)
    assert len(hook) == 2 and not any(slack_buttons(m) for m in hook)  # a webhook takes no call-back buttons
    assert slack.refused == []


async def test_a_wrong_bot_token_is_refused_and_given_up_not_retried(journal: Journal) -> None:
    slack = SlackContract(BOT_TOKEN)
    async with serving(slack) as base:
        channels = {"bot": {"type": "slack_bot", "channel": "C0123", "token": "xoxb-wrong", "api_url": f"{base}/api"}}
        async with _notifier(journal, channels) as running:
            running.notifier.emit(_notice(NoticeKind.ENFORCED))
            async with asyncio.timeout(5):
                while running.counts.get(("bot", "failed")) != 1:
                    await asyncio.sleep(0.02)
    assert slack.refused == ["invalid_auth"] and slack.received == []
    assert await Outbox(journal, "test").states() == {"failed": 1}


async def test_teams_gets_an_adaptive_card_the_workflow_accepts(journal: Journal) -> None:
    teams = TeamsContract()
    async with serving(teams) as base:
        channels = {"teams": {"type": "teams", "url": f"{base}/workflows/abc/triggers/manual/paths/invoke"}}
        async with _notifier(journal, channels, console_url="https://responder.example.com") as running:
            running.notifier.emit(_notice(NoticeKind.ENFORCED, hubs={"hub1": False}))
            [message] = await teams.wait_for(1)
    card = message["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Hubs"] == "hub1 (NOT verified)" and facts["Who"] == "user:alice@example.com"
    assert card["actions"][0]["url"] == "https://responder.example.com/console/subjects/user:alice@example.com#d-d-1"


async def test_the_generic_webhook_is_signed_and_a_receiver_with_another_secret_refuses_it(journal: Journal) -> None:
    good, other = SignedContract(SECRET), SignedContract("another-secret-entirely-0123")
    async with serving(good) as base, serving(other) as other_base:
        channels = {
            "good": {"type": "webhook", "url": f"{base}/responder", "secret": SECRET},
            "other": {"type": "webhook", "url": f"{other_base}/responder", "secret": SECRET},
        }
        async with _notifier(journal, channels) as running:
            running.notifier.emit(_notice(NoticeKind.UNDONE, actor="admin@example.com"))
            [message] = await good.wait_for(1)
            async with asyncio.timeout(5):
                while running.counts.get(("other", "failed")) != 1:
                    await asyncio.sleep(0.02)
    assert message["kind"] == "undone" and message["decision_id"] == "d-1"
    assert "By: admin@example.com" in message["text"]
    assert other.refused == ["bad signature"]


async def test_a_receiver_failing_with_500_then_429_gets_every_message_after_retries(journal: Journal) -> None:
    slack = SlackContract(BOT_TOKEN)
    slack.fail(500, count=2)
    slack.fail(429, count=1, retry_after=0.3)
    async with serving(slack) as base:
        channels = {"bot": {"type": "slack_bot", "channel": "C1", "token": BOT_TOKEN, "api_url": f"{base}/api"}}
        async with _notifier(journal, channels) as running:
            started = time.monotonic()
            for n in range(3):
                running.notifier.emit(_notice(NoticeKind.ENFORCED, f"d-{n}"))
            received = await slack.wait_for(3)
            waited = time.monotonic() - started
            async with asyncio.timeout(5):  # counted once the answer is read, just after the receiver has it
                while running.counts.get(("bot", "sent")) != 3:
                    await asyncio.sleep(0.02)
    assert sorted(b[1] for m in received for b in slack_buttons(m)) == ["d-0", "d-1", "d-2"]
    assert running.counts[("bot", "retried")] == 3 and running.counts[("bot", "sent")] == 3
    assert waited >= 0.3  # Retry-After was honoured
    assert await Outbox(journal, "test").states() == {"sent": 3}


async def test_the_rate_limit_spaces_messages_and_loses_none(journal: Journal) -> None:
    hook = SignedContract(SECRET)
    async with serving(hook) as base:
        channels = {"hook": {"type": "webhook", "url": f"{base}/responder", "secret": SECRET}}
        async with _notifier(journal, channels, rate_per_minute=600, burst=2) as running:  # 10 a second
            started = time.monotonic()
            for n in range(6):
                running.notifier.emit(_notice(NoticeKind.ENFORCED, f"d-{n}"))
            await hook.wait_for(6)
            took = time.monotonic() - started
    assert took >= 0.35  # 2 at once, then 4 at 10/s
    assert running.counts[("hook", "rate_limited")] >= 1


async def test_the_same_notice_of_a_decision_is_sent_once(journal: Journal) -> None:
    hook = SignedContract(SECRET)
    async with serving(hook) as base:
        channels = {"hook": {"type": "webhook", "url": f"{base}/responder", "secret": SECRET}}
        async with _notifier(journal, channels) as running:
            for _ in range(3):
                running.notifier.emit(_notice(NoticeKind.DRIFT, "d-7"))
            running.notifier.emit(_notice(NoticeKind.UNDONE, "d-7"))  # another kind: its own message
            await hook.wait_for(2)
            await asyncio.sleep(0.3)
    assert [m["kind"] for m in hook.received] == ["drift", "undone"]
    assert running.counts[("hook", "deduplicated")] == 2


async def test_messages_not_delivered_before_a_stop_are_delivered_after_the_restart(journal: Journal) -> None:
    hook = SignedContract(SECRET)
    hook.hang = True
    async with serving(hook) as base:
        channels = {"hook": {"type": "webhook", "url": f"{base}/responder", "secret": SECRET, "timeout_s": 0.3}}
        async with _notifier(journal, channels) as running:
            running.notifier.emit(_notice(NoticeKind.ENFORCED, "d-a"))
            running.notifier.emit(_notice(NoticeKind.EXPIRED, "d-b"))
            async with asyncio.timeout(5):
                while running.counts.get(("hook", "retried"), 0) < 1:
                    await asyncio.sleep(0.02)
        assert hook.received == []
        assert await Outbox(journal, "test").states() == {"pending": 2}
        hook.hang = False
        async with _notifier(journal, channels) as again:  # the next run of the service: nothing emitted again
            received = await hook.wait_for(2)
            async with asyncio.timeout(5):
                while again.counts.get(("hook", "sent")) != 2:
                    await asyncio.sleep(0.02)
    assert sorted(m["decision_id"] for m in received) == ["d-a", "d-b"]
    assert await Outbox(journal, "test").states() == {"sent": 2}


async def test_email_goes_over_starttls_to_a_real_smtp_server(journal: Journal, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    async with smtp_server(ca.issue("smtp")) as (port, mailbox):
        channels = {
            "mail": {
                "type": "email", "host": "127.0.0.1", "port": port, "sender": "responder@example.com",
                "to": ["secops@example.com"], "ca_file": str(ca.cafile),
            }
        }  # fmt: skip
        async with _notifier(journal, channels, console_url="https://responder.example.com") as running:
            running.notifier.emit(_notice(NoticeKind.ENFORCED, hubs={"hub1": True}))
            async with asyncio.timeout(10):
                while running.counts.get(("mail", "sent")) != 1:
                    await asyncio.sleep(0.05)
    [mail] = mailbox.messages
    assert mailbox.starttls_used == [True]
    assert mail["Subject"] == "Enforced: cut-off on user:alice@example.com (decision d-1)"
    text = mail.get_payload(decode=True).decode()  # as a mail reader shows it (long lines are wrapped on the wire)
    assert "hub1 (verified)" in text and "okta-user-reported-suspicious +80" in text
    assert "responder undo d-1" in text
    assert "https://responder.example.com/console/subjects/user:alice@example.com#d-d-1" in text


async def test_email_is_refused_by_a_server_whose_certificate_is_not_trusted(journal: Journal, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    async with smtp_server(ca.issue("smtp")) as (port, mailbox):
        channels = {
            "mail": {
                "type": "email", "host": "127.0.0.1", "port": port, "sender": "responder@example.com",
                "to": ["secops@example.com"],
            }
        }  # fmt: skip
        async with _notifier(journal, channels) as running:
            running.notifier.emit(_notice(NoticeKind.ENFORCED))
            async with asyncio.timeout(10):
                while running.counts.get(("mail", "retried")) is None:
                    await asyncio.sleep(0.05)
    assert mailbox.messages == []


async def test_the_outbox_on_each_journal_engine_sends_in_order_retries_later_and_prunes_only_the_settled(
    journal_url: str,
) -> None:
    journal = await open_journal(journal_url)
    try:
        outbox = Outbox(journal, "test")
        items = [Outgoing(f"0{n}", "slack", "enforced", f"d-{n}", "{}") for n in range(3)]
        await outbox.add(items, 100.0, "2026-01-01T00:00:00+00:00")
        await outbox.add(items[:1], 100.0, "2026-01-01T00:00:00+00:00")  # written again after a crash: once
        assert [o.id for o in await outbox.due("slack", 100.0)] == ["00", "01", "02"]
        assert await outbox.due("mail", 100.0) == []
        await outbox.retry_at(items[0], 200.0, "HTTP 500")
        await outbox.settle(items[1], OutboxState.SENT)
        assert [o.id for o in await outbox.due("slack", 150.0)] == ["02"]
        assert await outbox.next_due("slack") == 100.0
        [again] = [o for o in await outbox.due("slack", 200.0) if o.id == "00"]
        assert again.attempts == 1
        pruned = await journal.prune(events_before="2026-06-01", decisions_before="2025-01-01")
        assert pruned["notifications"] == 1  # the sent one; the pending ones stay however old
        assert await outbox.states() == {"pending": 2}
    finally:
        await journal.close()


class _Broken:
    """A channel adapter with a bug: every send raises something that is not DeliveryFailed."""

    name = "broken"

    def __init__(self) -> None:
        self.tries = 0

    async def send(self, message: Message) -> None:
        self.tries += 1
        raise KeyError("a bug")

    async def close(self) -> None:
        return None


async def test_an_adapter_bug_is_tried_again_then_given_up_and_other_channels_still_deliver(journal: Journal) -> None:
    hook, broken = SignedContract(SECRET), _Broken()
    counts: dict[tuple[str, str], int] = {}
    async with serving(hook) as base:
        channels = {
            "broken": broken,
            "hook": open_channel("hook", CHANNEL.validate_python({"type": "webhook", "url": f"{base}/responder",
                                                                  "secret": SECRET})),
        }  # fmt: skip
        notifier = Notifier(
            channels, [Route(("broken", "hook"))], Outbox(journal, "test"), clock=lambda: datetime.now(UTC),
            max_attempts=2, retry_min_s=0.05, count=lambda c, o: counts.__setitem__((c, o), counts.get((c, o), 0) + 1),
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.run(stop))
        try:
            notifier.emit(_notice(NoticeKind.ENFORCED))
            await hook.wait_for(1)
            async with asyncio.timeout(5):
                while counts.get(("broken", "failed")) != 1:
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert broken.tries == 2 and counts[("broken", "retried")] == 1
