"""Leaving the lab as a case found it: every decision still in force is undone (one waiting for approval
is rejected) through the admin API; what a replaced decision did is taken back on the hub; then the run
waits until the case's reachability is back to its baseline and the lab's own matrix passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from responder.core.decisions import action_from_dict
from responder.pep import SshHub
from responder.policy.testing import describe
from responder.replay.case import Reach
from responder.replay.probes import LabProbes
from responder.replay.report import CaseReport
from responder.replay.session import Session
from responder.replay.settings import Setup

LIVE = ("active", "awaiting_approval")
# Taken back on the hub when their decision was replaced; kill_flows has nothing to take back.
_TAKEN_BACK = ("quarantine", "delete_element", "add_element")


class Restorer:
    def __init__(
        self, session: Session, probes: LabProbes, setup: Setup, report: CaseReport, *, timeout_s: float
    ) -> None:
        self._session = session
        self._probes = probes
        self._inventory = setup.inventory
        self._names = setup.peer_names
        self._report = report
        self._timeout_s = timeout_s

    async def restore(self, baseline: Mapping[Reach, str], *, enforced: bool) -> None:
        """Undo what the case left; `enforced`: something was carried out on a hub, so the lab's matrix is
        waited for too."""
        decisions = await self._session.snapshot()
        for d in decisions:
            if d["state"] in LIVE:
                status, text = await self._session.undo(d["id"])
                verb = "rejected" if d["state"] == "awaiting_approval" else "undone"
                self._report.cleanup.append(f"{d['id']} ({d['subject']} -> {d['response']}): {verb}, HTTP {status}")
                if status != 202:
                    self._report.fail(f"! cleanup: undo {d['id']}: HTTP {status} {text}")
        await self._session.settle("cleanup")
        await self._undo_replaced(decisions)
        await self._reachability(baseline)
        if enforced:
            await self._lab_healthy()

    async def _undo_replaced(self, decisions: Sequence[dict[str, Any]]) -> None:
        """A decision replaced by a stronger one keeps its actions on the hub, and the admin API cannot
        undo it: take back its reversible, restore-free actions on the hub directly."""
        left = [
            (d, action_from_dict(i["action"])) for d in decisions if d["state"] == "replaced"
            for i in d["actions"] if i["kind"] == "apply" and i["state"] == "done"
        ]  # fmt: skip
        for d, action in left:
            what = describe(action, self._names)
            if action.type.value not in _TAKEN_BACK:
                if action.type.value != "kill_flows":
                    self._report.fail(f"! cleanup: {d['id']} was replaced; cannot take back {what}")
                continue
            hub = SshHub(self._inventory.hub(action.hub), peers=self._inventory.allowed_ips(action.hub))
            try:
                result = await hub.undo(action, None)
            finally:
                await hub.close()
            outcome = "ok" if result.ok else result.detail
            self._report.cleanup.append(f"{d['id']} (replaced): took back {what} on the hub: {outcome}")
            if not result.ok:
                self._report.fail(f"! cleanup: could not take back {what}: {result.detail}")

    async def _reachability(self, baseline: Mapping[Reach, str]) -> None:
        if not baseline:
            return
        started = time.monotonic()
        pending = dict(baseline)
        while pending:
            for reach, before in list(pending.items()):
                if await self._probes.probe(reach) == before:
                    del pending[reach]
            if not pending:
                break
            if time.monotonic() - started > self._timeout_s:
                for reach, before in pending.items():
                    self._report.fail(f"! cleanup: {self._probes.check_of(reach).label} is not back to {before}")
                return
            await asyncio.sleep(0.2)
        self._report.cleanup.append(f"reachability back to the baseline in {time.monotonic() - started:.1f}s")

    async def _lab_healthy(self) -> None:
        """The lab's own reachability matrix passes again: the next case finds it as this one did."""
        started = time.monotonic()
        while True:
            failed = [p for p in await self._probes.lab.matrix() if not p.passed]
            if not failed:
                self._report.cleanup.append(f"lab matrix healthy ({time.monotonic() - started:.1f}s)")
                return
            if time.monotonic() - started > self._timeout_s:
                for p in failed:
                    self._report.fail(
                        f"! cleanup: lab matrix: {p.check.label} is {p.outcome}, expected {p.check.expect}"
                    )
                return
            await asyncio.sleep(0.5)
