"""A decision's whole life through the real service (Okta webhook in, SQLite journal, admin API) against an
in-memory hub: decided, enforced and verified; held for approval, then approved; undone; expired by its
TTL; replaced by a stronger one; resumed after a crash. Fast tests of the logic, beside the lab tests that
prove the same with packets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.config import Settings
from responder.core.actions import ActionType
from responder.inventory import Inventory
from responder.journal import open_journal
from responder.service.service import Service
from tests.support.memory_hub import MemoryHub
from tests.support.service import running

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "rules" / "tests" / "inventory.yaml"  # hub1: alice's admin1, app1, bob-laptop, breakglass1
OKTA_SECRET = "Basic bGlmZWN5Y2xlOnNlY3JldC12YWx1ZQ=="
TOKEN = "admin-token-for-lifecycle-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}

ALICE = "alice@example.com"
ALICE_KEY = "JfQ7FIatlaE5jj7rPYO8QBABX8yb7bNbQy4AKY1QIfc="  # admin1, in admin_devices
ALICE_IP = "10.100.0.10"
# What the shipped rules make of these for alice alone:
REPORT = "user.account.report_suspicious_activity_by_enduser"  # 80 points: cut-off (4 h)
THREAT = "security.threat.detected"  # 45 points: quarantine (1 h)
BREACH = "security.breached_credential.detected"  # 60 points: key rotation, approval for admins
DEACTIVATE = "user.lifecycle.deactivate"  # offboarding: no approval, no TTL
ACTIVATE = "user.lifecycle.activate"  # lifts the offboarding (its lifted_by)
SETTLED = ("done", "failed", "cancelled", "awaiting_approval", "refused")


class _Clock:
    """The service's wall clock, which a test moves forward."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


class _Responder:
    """The service as an IdP and an operator see it: Okta deliveries in, the admin API."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def okta(self, *event_types: str, user: str = ALICE) -> list[str]:
        """One hook delivery of these events about `user`, in this order; their uuids."""
        party = {"type": "User", "alternateId": user, "id": f"00u-{user}"}
        events = [self._event(event_type, party) for event_type in event_types]
        body = {"eventType": "com.okta.event_hook", "eventId": str(uuid.uuid4()), "data": {"events": events}}
        headers = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
        async with self.http.post(f"{self.base}/hooks/okta", data=json.dumps(body), headers=headers) as r:
            assert r.status == 200, await r.text()
        return [str(e["uuid"]) for e in events]

    @staticmethod
    def _event(event_type: str, party: dict[str, str]) -> dict[str, Any]:
        return {
            "uuid": str(uuid.uuid4()), "published": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "eventType": event_type, "version": "0", "severity": "WARN", "actor": party, "target": [party],
            "outcome": {"result": "SUCCESS", "reason": "lifecycle test"},
        }  # fmt: skip

    async def decision(self, response: str) -> dict[str, Any]:
        """The decision of that response once it exists and its actions are settled, with them."""
        found: dict[str, Any] = {}

        async def settled() -> bool:
            async with self.http.get(f"{self.base}/api/decisions", headers=ADMIN) as r:
                ids = [d["id"] for d in (await r.json())["decisions"] if d["response"] == response]
            if not ids:
                return False
            found.update(await self.show(ids[0]))
            # Pending after a try: outstanding, with the reason (the convergence loop tries it again).
            return all(
                a["state"] in SETTLED or (a["state"] == "pending" and a["attempts"] > 0) for a in found["actions"]
            )

        await _until(settled)
        return found

    async def show(self, decision_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/api/decisions/{decision_id}", headers=ADMIN) as r:
            assert r.status == 200, await r.text()
            view: dict[str, Any] = await r.json()
            return view

    async def operate(self, decision_id: str, verb: str) -> None:
        url = f"{self.base}/api/decisions/{decision_id}/{verb}"
        async with self.http.post(url, json={"actor": "oncall"}, headers=ADMIN) as r:
            assert r.status == 202, await r.text()

    async def metric(self, name: str) -> float:
        async with self.http.get(f"{self.base}/metrics", headers=ADMIN) as r:
            text = await r.text()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} "))

    async def state_of(self, decision_id: str) -> str:
        state: str = (await self.show(decision_id))["state"]
        return state


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


def _applies(decision: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    return sorted((a["action"]["type"], a["state"], a["verified"]) for a in decision["actions"] if a["kind"] == "apply")


def _undos(decision: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    return sorted((a["action"]["type"], a["state"], a["verified"]) for a in decision["actions"] if a["kind"] == "undo")


CUT_OFF_DONE = [("delete_element", "done", True), ("kill_flows", "done", True), ("remove_peer", "done", True)]


async def _cut_off_verified(responder: _Responder, decision_id: str, timeout: float = 10.0) -> None:
    """Wait until the convergence loop has every action of the cut-off done and verified."""

    async def converged() -> bool:
        return _applies(await responder.show(decision_id)) == CUT_OFF_DONE

    await _until(converged, timeout)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=INVENTORY, rules=(ROOT / "rules",),
        okta_secret=OKTA_SECRET, admin_token=TOKEN,
    )  # fmt: skip


@pytest.fixture
def hub() -> MemoryHub:
    return MemoryHub.of(Inventory.load(INVENTORY), "hub1")


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
async def responder(settings: Settings, hub: MemoryHub, clock: _Clock) -> AsyncIterator[_Responder]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        running(settings, hubs={"hub1": hub}, clock=clock) as (_, base),
    ):
        yield _Responder(http, base)


def _cut_off(hub: MemoryHub) -> bool:
    return ALICE_KEY not in hub.peers and ALICE_IP not in hub.elements("admin_devices") and ALICE_IP not in hub.flows


def _untouched_but_alice(hub: MemoryHub) -> bool:
    return (
        {"10.100.0.20", "10.100.0.30", "10.100.0.40"} <= hub.flows
        and "10.100.0.40" in hub.elements("admin_devices")
        and hub.elements("app_servers") == {"10.100.0.20"}
        and len(hub.peers) >= 3
    )


async def test_a_decision_is_enforced_in_one_batch_and_verified_by_reading_the_hub_back(
    responder: _Responder, hub: MemoryHub
) -> None:
    await responder.okta(REPORT)
    decision = await responder.decision("cut-off")
    assert decision["subject"] == f"user:{ALICE}" and decision["state"] == "active"
    assert _applies(decision) == CUT_OFF_DONE
    assert _cut_off(hub) and _untouched_but_alice(hub)
    assert [sorted(a.type.value for a in batch) for batch in hub.batches] == [
        ["delete_element", "kill_flows", "remove_peer"]
    ]


async def test_an_action_the_hub_does_not_show_stays_pending_and_converges_once_the_hub_shows_it(
    responder: _Responder, hub: MemoryHub
) -> None:
    hub.ignoring.add(ActionType.REMOVE_PEER)
    await responder.okta(REPORT)
    decision = await responder.decision("cut-off")
    assert ("remove_peer", "pending", False) in _applies(decision)
    pending = next(a for a in decision["actions"] if a["action"]["type"] == "remove_peer")
    assert "does not show it" in pending["result"] and pending["pending_since"] and pending["attempts"] == 1
    assert ALICE_KEY in hub.peers
    hub.ignoring.clear()  # the hub now does what it is asked: the next try (back-off from 0.5 s) verifies it

    await _cut_off_verified(responder, decision["id"])
    assert ALICE_KEY not in hub.peers
    remove = next(a for a in (await responder.show(decision["id"]))["actions"] if a["action"]["type"] == "remove_peer")
    assert remove["attempts"] >= 2 and remove["pending_since"] is None and remove["next_try_at"] is None


async def test_an_unreachable_hub_leaves_the_actions_pending_and_they_converge_when_it_answers(
    responder: _Responder, hub: MemoryHub
) -> None:
    hub.unreachable = True
    await responder.okta(REPORT)
    decision = await responder.decision("cut-off")
    assert _applies(decision) == [("delete_element", "pending", False), ("kill_flows", "pending", False),
                                  ("remove_peer", "pending", False)]  # fmt: skip
    assert all("hub1 does not answer (since " in a["result"] for a in decision["actions"])
    assert ALICE_KEY in hub.peers
    assert decision["unverified_actions"] == 3  # what `responder decisions` shows beside it

    async def planned() -> bool:  # probed every second while down; the next try is shown
        return all(a["next_try_at"] for a in (await responder.show(decision["id"]))["actions"])

    await _until(planned)
    await asyncio.sleep(1.0)  # the outage lasts a while longer
    outage_s = (datetime.now(UTC) - datetime.fromisoformat(decision["created_at"])).total_seconds()
    hub.unreachable = False  # it answers again: everything outstanding there is tried at once

    await _cut_off_verified(responder, decision["id"], timeout=5)
    assert _cut_off(hub)
    # Containment is measured from the delivery's arrival to verification, the outage included.
    count, total = (
        await responder.metric("responder_containment_seconds_count"),
        await responder.metric("responder_containment_seconds_sum"),
    )
    assert count == 1 and total >= outage_s


async def test_a_response_that_needs_approval_waits_and_is_enforced_once_approved(
    responder: _Responder, hub: MemoryHub
) -> None:
    await responder.okta(BREACH)
    decision = await responder.decision("rotate-key")
    assert decision["state"] == "awaiting_approval"
    assert {a["state"] for a in decision["actions"]} == {"awaiting_approval"}
    assert hub.batches == [] and ALICE_KEY in hub.peers

    await responder.operate(decision["id"], "approve")
    approved = await responder.decision("rotate-key")
    assert approved["state"] == "active"
    assert _applies(approved) == [("kill_flows", "done", True), ("rotate_key", "done", True)]
    assert ALICE_KEY in hub.revoked and ALICE_KEY not in hub.peers and ALICE_IP not in hub.flows
    assert [a["kind"] for a in approved["audit"]] == ["approve"]


async def test_undo_puts_back_what_the_decision_took_and_verifies_it(responder: _Responder, hub: MemoryHub) -> None:
    await responder.okta(REPORT)
    decision = await responder.decision("cut-off")
    assert _cut_off(hub)

    await responder.operate(decision["id"], "undo")
    undone = await responder.decision("cut-off")
    assert undone["state"] == "undone"
    assert _undos(undone) == [("delete_element", "done", True), ("remove_peer", "done", True)]  # flows: nothing
    assert hub.peers[ALICE_KEY].allowed_ips == [f"{ALICE_IP}/32"]
    assert ALICE_IP in hub.elements("admin_devices")


async def test_a_reactivation_lifts_the_offboarding_through_an_undo_attributed_to_the_policy(
    responder: _Responder, hub: MemoryHub
) -> None:
    await responder.okta(DEACTIVATE)
    offboard = await responder.decision("offboard")
    assert offboard["state"] == "active" and offboard["expires_at"] is None
    assert _applies(offboard) == CUT_OFF_DONE and _cut_off(hub)

    (activated,) = await responder.okta(ACTIVATE)
    await _until(lambda: _is(responder, offboard["id"], "undone"))
    undone = await responder.decision("offboard")
    assert _undos(undone) == [("delete_element", "done", True), ("remove_peer", "done", True)]
    assert ALICE_KEY in hub.peers and ALICE_IP in hub.elements("admin_devices")
    ((audit),) = undone["audit"]
    assert (audit["kind"], audit["actor"]) == ("undone", f"policy:okta-user-reactivated (event {activated})")
    assert json.loads(audit["detail"]) == {"lifted_by": "okta-user-reactivated", "event": activated}


async def test_a_reactivation_in_the_same_batch_as_the_deactivation_lifts_it_too(
    responder: _Responder, hub: MemoryHub
) -> None:
    await responder.okta(DEACTIVATE, ACTIVATE)  # one delivery: decided and lifted in one batch
    offboard = await responder.decision("offboard")
    await _until(lambda: _is(responder, offboard["id"], "undone"))
    assert _applies(await responder.decision("offboard")) == CUT_OFF_DONE
    assert ALICE_KEY in hub.peers and ALICE_IP in hub.elements("admin_devices")
    assert _untouched_but_alice(hub)


async def test_a_reactivation_leaves_a_cut_off_for_risk_in_force(responder: _Responder, hub: MemoryHub) -> None:
    await responder.okta(REPORT)
    cut_off = await responder.decision("cut-off")
    await responder.okta(ACTIVATE)
    await responder.okta(REPORT, user="bob@example.com")  # decided after the activation: once it is there

    async def bob_decided() -> bool:
        async with responder.http.get(f"{responder.base}/api/decisions", headers=ADMIN) as r:
            return any(d["subject"] == "user:bob@example.com" for d in (await r.json())["decisions"])

    await _until(bob_decided)
    assert await responder.state_of(cut_off["id"]) == "active" and _cut_off(hub)


async def test_a_decision_whose_ttl_runs_out_is_expired_and_undone(
    responder: _Responder, hub: MemoryHub, clock: _Clock
) -> None:
    await responder.okta(THREAT)
    decision = await responder.decision("quarantine")
    assert _applies(decision) == [("quarantine", "done", True)]
    assert ALICE_IP in hub.elements("quarantine")

    clock.ahead = timedelta(hours=1, minutes=1)  # the hub's own clock has not moved: the kernel timeout has not
    await _until(lambda: _is(responder, decision["id"], "expired"))
    expired = await responder.decision("quarantine")
    assert _undos(expired) == [("quarantine", "done", True)]
    assert ALICE_IP not in hub.elements("quarantine")
    assert [a.type.value for a in hub.undone] == ["quarantine"]


async def _is(responder: _Responder, decision_id: str, state: str) -> bool:
    return await responder.state_of(decision_id) == state


async def test_an_escalation_replaces_the_weaker_response_and_undoing_it_takes_back_both(
    responder: _Responder, hub: MemoryHub
) -> None:
    await responder.okta(THREAT)
    quarantine = await responder.decision("quarantine")
    assert ALICE_IP in hub.elements("quarantine")

    await responder.okta(REPORT)
    cut_off = await responder.decision("cut-off")
    assert cut_off["state"] == "active" and await responder.state_of(quarantine["id"]) == "replaced"
    assert _applies(cut_off) == CUT_OFF_DONE
    assert _cut_off(hub) and ALICE_IP in hub.elements("quarantine")  # replaced, not undone

    await responder.operate(cut_off["id"], "undo")
    await _until(lambda: _is(responder, quarantine["id"], "undone"))
    await responder.decision("cut-off")
    assert _undos(await responder.decision("quarantine")) == [("quarantine", "done", True)]
    assert ALICE_KEY in hub.peers and ALICE_IP in hub.elements("admin_devices")
    assert ALICE_IP not in hub.elements("quarantine")


async def test_intents_claimed_when_the_service_died_are_carried_out_when_it_starts_again(
    settings: Settings, hub: MemoryHub, clock: _Clock
) -> None:
    hub.hold()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with _dies_while_enforcing(settings, hub, clock) as base:
            await _Responder(http, base).okta(REPORT)
            await asyncio.wait_for(hub.waiting.wait(), 10)
        assert ALICE_KEY in hub.peers  # the batch never reached the hub's state
        journal = await open_journal(settings.journal)
        try:  # claimed (the pipeline writes them running), not carried out
            assert sorted(i.state.value for i in await journal.open_intents()) == ["running"] * 3
        finally:
            await journal.close()
        hub.release()

        async with running(settings, hubs={"hub1": hub}, clock=clock) as (_, base):
            decision = await _Responder(http, base).decision("cut-off")
    assert _applies(decision) == CUT_OFF_DONE
    assert _cut_off(hub) and _untouched_but_alice(hub)
    assert len(hub.batches) == 2  # the lost one, and the one after the restart


@contextlib.asynccontextmanager
async def _dies_while_enforcing(settings: Settings, hub: MemoryHub, clock: _Clock) -> AsyncIterator[str]:
    """The service, until the body is done and a batch is at the hub; then it is gone at once: the batch
    in flight is cancelled and nothing after it runs, as when the process is killed."""
    service = Service(
        settings.model_copy(update={"listen": settings.listen.model_copy(update={"port": 0})}),
        hubs={"hub1": hub}, instance="test", clock=clock,
    )  # fmt: skip
    task = asyncio.create_task(service.run(asyncio.Event()))
    async with asyncio.timeout(10):
        while service.address is None or not service.started.is_set():
            assert not task.done(), task.exception()
            await asyncio.sleep(0.01)
    host, port = service.address
    try:
        yield f"http://{host}:{port}"
    finally:
        hub.crash()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- through outages: what is in force converges, and the journal says what is true ---------------------


async def test_an_answer_lost_after_the_hub_acted_is_verified_by_reading_back_not_by_acting_again(
    responder: _Responder, hub: MemoryHub
) -> None:
    hub.losing_answers = True
    await responder.okta(REPORT)
    decision = await responder.decision("cut-off")
    assert _applies(decision) == [("delete_element", "pending", False), ("kill_flows", "pending", False),
                                  ("remove_peer", "pending", False)]  # fmt: skip
    assert _cut_off(hub)  # it happened; the responder does not know yet
    hub.losing_answers = False

    await _cut_off_verified(responder, decision["id"])
    remove = next(a for a in (await responder.show(decision["id"]))["actions"] if a["action"]["type"] == "remove_peer")
    assert remove["result"].startswith("verified by reading hub1 back, after: no answer in time")
    # The state changes were not sent again; the flow kill, which leaves no state to read, was.
    assert [sorted(a.type.value for a in batch) for batch in hub.batches[1:]] == [["kill_flows"]]


async def test_an_undo_during_an_outage_cancels_the_cut_off_and_access_is_whole_when_the_hub_answers(
    responder: _Responder, hub: MemoryHub
) -> None:
    hub.unreachable = True
    await responder.okta(REPORT)
    decision = await responder.decision("cut-off")
    await responder.operate(decision["id"], "undo")
    undone = await responder.decision("cut-off")
    assert undone["state"] == "undone"
    assert {a[1] for a in _applies(undone)} == {"cancelled"}
    # Each was tried once without an answer: it may have happened, so each is taken back too.
    assert _undos(undone) == [("delete_element", "pending", False), ("remove_peer", "pending", False)]
    batches = len(hub.batches)
    hub.unreachable = False

    async def restored() -> bool:
        return _undos(await responder.show(decision["id"])) == [
            ("delete_element", "done", True), ("remove_peer", "done", True)
        ]  # fmt: skip

    await _until(restored, timeout=5)
    assert len(hub.batches) == batches  # the cancelled cut-off was never carried out
    assert ALICE_KEY in hub.peers and ALICE_IP in hub.elements("admin_devices") and _untouched_but_alice(hub)


async def test_a_rotation_whose_answer_was_lost_is_not_done_a_second_time(
    responder: _Responder, hub: MemoryHub
) -> None:
    await responder.okta(BREACH)
    decision = await responder.decision("rotate-key")
    hub.losing_answers = True
    await responder.operate(decision["id"], "approve")
    await _until(lambda: _rotation_is(responder, decision["id"], "pending"))
    assert ALICE_KEY in hub.revoked  # it happened
    hub.losing_answers = False
    await _until(lambda: _rotation_is(responder, decision["id"], "done"))
    rotations = [a for batch in hub.batches for a in batch if a.type is ActionType.ROTATE_KEY]
    assert len(rotations) == 1


async def _rotation_is(responder: _Responder, decision_id: str, state: str) -> bool:
    actions = (await responder.show(decision_id))["actions"]
    return any(a["action"]["type"] == "rotate_key" and a["state"] == state for a in actions)


async def test_a_hub_back_from_a_reboot_is_brought_back_to_what_is_in_force_and_it_is_reported_as_drift(
    settings: Settings, hub: MemoryHub, clock: _Clock
) -> None:
    baseline = MemoryHub.of(Inventory.load(INVENTORY), "hub1")
    fast = settings.model_copy(update={"reconcile_interval_s": 0.5})
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        running(fast, hubs={"hub1": hub}, clock=clock) as (service, base),
    ):
        responder = _Responder(http, base)
        await responder.okta(REPORT)
        decision = await responder.decision("cut-off")
        assert _cut_off(hub)
        hub.reboot(baseline)
        assert ALICE_KEY in hub.peers and ALICE_IP in hub.elements("admin_devices")

        async def reasserted() -> bool:
            return ALICE_KEY not in hub.peers and ALICE_IP not in hub.elements("admin_devices")

        await _until(reasserted, timeout=5)
        shown = await responder.show(decision["id"])
    drift = [a for a in shown["audit"] if a["kind"] == "drift"]
    assert {json.loads(a["detail"])["action"].split()[0] for a in drift} >= {"remove_peer", "delete_element"}
    assert all(json.loads(a["detail"])["repaired"] for a in drift)
    remove = next(a for a in shown["actions"] if a["action"]["type"] == "remove_peer")
    assert remove["state"] == "done" and remove["verified"] and remove["attempts"] == 2
    assert service.metrics.drift.labels("hub1", "remove_peer")._value.get() >= 1
