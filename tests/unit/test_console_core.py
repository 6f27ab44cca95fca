"""The console's pure parts: the session cookie, the score plot, the feed's fan-out from one poller."""

from __future__ import annotations

import asyncio
import json

from responder.console import session
from responder.console.feed import DecisionFeed, Full
from responder.console.plot import score_plot
from responder.journal import DecisionRecord, DecisionState
from responder.service.operators import Operator, Role

KEY = b"k" * 32
ALICE_ADMIN = Operator("alice@example.com", Role.ADMIN, "oidc")


def test_a_session_names_its_operator_and_role_until_it_expires() -> None:
    value = session.issue(ALICE_ADMIN, KEY, now=1000.0, ttl_s=60)
    assert session.verify(value, KEY, now=1059.0) == Operator("alice@example.com", Role.ADMIN, "console:oidc")
    assert session.verify(value, KEY, now=1060.0) is None  # expired
    assert session.verify(value, b"another key" * 3, now=1001.0) is None


def test_a_session_whose_role_was_changed_is_refused() -> None:
    value = session.issue(Operator("v@example.com", Role.VIEWER, "token"), KEY, now=0.0)
    payload, _, signature = value.partition(".")
    raised = payload.replace(payload, session.issue(ALICE_ADMIN, b"x", 0.0).partition(".")[0])
    assert session.verify(f"{raised}.{signature}", KEY, now=1.0) is None
    assert session.verify("garbage", KEY, now=1.0) is None
    assert session.verify(".", KEY, now=1.0) is None


def test_the_plot_escapes_and_describes_its_points() -> None:
    svg = score_plot([(0.0, 10.0), (60.0, 80.0)], threshold=50, title="<alice>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "&lt;alice&gt;" in svg and "<alice>" not in svg
    assert svg.count('class="point"') == 2 and "threshold" in svg
    assert "1970-01-01 00:01:00 80" in svg  # the <desc> a screen reader reads
    assert "no scores recorded" in score_plot([])


def test_the_plot_draws_a_curve_with_dots_at_events_decisions_and_thresholds() -> None:
    curve = [(0.0, 0.0), (0.0, 40.0), (30.0, 30.0), (60.0, 20.0), (60.0, 80.0), (120.0, 80.0)]
    svg = score_plot(
        curve, dots=[(0.0, 40.0), (60.0, 80.0)], marks=[(60.0, "cut-off"), (-5.0, "older")],
        thresholds=[("cut-off", 70), ("quarantine", 40)],
    )  # fmt: skip
    assert len(svg.split('points="')[1].split('"')[0].split()) == len(curve)
    assert svg.count('class="point"') == 2
    assert svg.count('<line class="decision"') == 1  # one before the curve's first event is left out
    assert ">cut-off 70</text>" in svg and ">quarantine 40</text>" in svg
    assert "1970-01-01 00:01:00 decided cut-off" in svg


def _decision(i: int, state: DecisionState) -> DecisionRecord:
    body = {"score": 80, "contributions": [{"rule": "r", "points": 80, "reason": "x"}], "requires_approval": False}
    return DecisionRecord(
        id=f"d{i}", subject="user:a@example.com", response="cut-off", level=20, state=state,
        created_at=f"2026-12-03T17:00:0{i}+00:00", expires_at=None, body=json.dumps(body),
    )  # fmt: skip


class _Journal:
    def __init__(self) -> None:
        self.rows: list[DecisionRecord] = []
        self.reads = 0

    async def decisions(self, state: object = None, limit: int = 100) -> list[DecisionRecord]:
        self.reads += 1
        return list(reversed(self.rows))[:limit]


async def test_one_poll_reaches_every_listener_and_only_changes_are_sent() -> None:
    journal = _Journal()
    journal.rows.append(_decision(0, DecisionState.ACTIVE))
    feed = DecisionFeed(journal, max_listeners=2)
    await feed.poll(announce=False)  # what exists already is not news
    first, second = feed.subscribe(), feed.subscribe()
    try:
        feed.subscribe()
        raise AssertionError("a third listener was let in")
    except Full:
        pass
    journal.rows.append(_decision(1, DecisionState.ACTIVE))
    journal.rows[0] = _decision(0, DecisionState.UNDONE)
    reads = journal.reads
    assert await feed.poll() == 2
    assert journal.reads == reads + 1  # one read for both listeners
    for queue in (first, second):
        got = [queue.get_nowait(), queue.get_nowait()]
        assert {(r["id"], r["state"]) for r in got if r} == {("d0", "undone"), ("d1", "active")}
    assert await feed.poll() == 0
    feed.close()
    assert first.get_nowait() is None and second.get_nowait() is None


async def test_the_poller_reads_nothing_while_nobody_listens() -> None:
    journal = _Journal()
    feed = DecisionFeed(journal, interval_s=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    await asyncio.sleep(0.1)
    assert journal.reads == 1  # the first look only
    queue = feed.subscribe()
    await asyncio.sleep(0.1)
    assert journal.reads > 3
    feed.unsubscribe(queue)
    stop.set()
    await asyncio.wait_for(task, 1)
