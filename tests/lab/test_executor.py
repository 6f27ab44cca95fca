"""The executor between journal and hubs: intents written before a crash are resumed once, results and
restore data are journaled, irreversible actions cannot be restored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from responder.core.actions import Action, ActionType
from responder.core.identifiers import WireGuardKey
from responder.executor import Executor, RestoreRefused, intent_records, intents_of
from responder.journal import DecisionRecord, DecisionState, IntentState, Journal, open_journal
from responder.lab import Lab
from responder.pep import SshHub
from tests.support.journal import finish_intent

pytestmark = pytest.mark.lab


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        yield j
    finally:
        await j.close()


async def test_open_intents_are_resumed_once_and_restorable(lab: Lab, journal: Journal) -> None:
    app = next(p for p in lab.inventory.peers if p.name == "app1")
    action = Action(ActionType.DELETE_ELEMENT, "hub1", address=app.tunnel_ip, set_name="app_servers")
    decision = DecisionRecord(
        id="d1", subject="user:x", response="cut", level=20, state=DecisionState.ACTIVE,
        created_at=_now().isoformat(), expires_at=None, body="{}",
    )  # fmt: skip
    # Written, then the process "crashed" before executing.
    await journal.record_manual(decision, intent_records("d1", intents_of("d1", [action]), _now().isoformat()))
    hub = SshHub(lab.inventory.hub("hub1"))
    try:
        executor = Executor(journal, {"hub1": hub}, _now)
        (outcome,) = await executor.resume()
        assert (outcome.intent_id, outcome.result.verified) == ("d1.1", True)
        assert await executor.resume() == []
        stored = await journal.intent("d1.1")
        assert stored is not None
        assert (stored.state, stored.verified, stored.attempts) == (IntentState.DONE, True, 1)
        listing = await hub.call("list_set", {"table": "zerotrust", "set": "app_servers"})
        assert listing["elements"] == []

        undone = await executor.restore("d1.1", "test")
        assert undone.result.verified
        listing = await hub.call("list_set", {"table": "zerotrust", "set": "app_servers"})
        assert listing["elements"] == [str(app.tunnel_ip)]
    finally:
        await hub.close()


async def test_an_irreversible_action_cannot_be_restored(journal: Journal) -> None:
    key = "hYDUM3RyOvlOg1cpJ5kZEyDf4I75JdM1gP7SoghRVnY="
    action = Action(ActionType.ROTATE_KEY, "hub1", peer_key=WireGuardKey(key))
    decision = DecisionRecord(
        id="d2", subject="user:x", response="rotate", level=30, state=DecisionState.ACTIVE,
        created_at=_now().isoformat(), expires_at=None, body="{}",
    )  # fmt: skip
    (intent,) = intent_records("d2", intents_of("d2", [action]), _now().isoformat())
    assert intent.irreversible and json.loads(intent.action)["peer_key"] == key
    await journal.record_manual(decision, [intent])
    await journal.start_intent("d2.1", _now().isoformat())
    await finish_intent(journal, "d2.1", _now().isoformat(), state=IntentState.DONE, result="ok", verified=True)
    with pytest.raises(RestoreRefused, match="irreversible"):
        await Executor(journal, {}, _now).restore("d2.1", "test")
    with pytest.raises(RestoreRefused, match="no applied action"):
        await Executor(journal, {}, _now).restore("d9.1", "test")
