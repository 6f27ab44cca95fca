"""A case's reachability checks as packets in the lab: a check's source and destination are lab nodes
(the destination may be an address), probed with the lab's own TCP connects and pings."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence

from responder.lab import Check, Expect, Lab
from responder.replay.case import Reach
from responder.replay.expectations import reach_met
from responder.replay.options import ReplayError
from responder.replay.report import CaseReport

# Enforcement is verified already when a case is checked; a short grace covers flows being torn down.
GRACE_S = 3.0


class LabProbes:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def check_of(self, reach: Reach) -> Check:
        topology = self.lab.topology
        try:
            address = ipaddress.ip_address(reach.dst)
            dst = reach.dst
        except ValueError:
            node = topology.node(reach.dst)
            if node.tunnel is None:
                raise ReplayError(f"reachability: {reach.dst} has no tunnel address; give an address") from None
            address, dst = node.tunnel, node.name
        if not isinstance(address, ipaddress.IPv4Address):
            raise ReplayError("reachability: the lab is IPv4 only")
        topology.node(reach.src)
        expect = Expect.ALLOW if reach.expect == "open" else Expect.DROP
        return Check(reach.src, dst, address, reach.proto, reach.port if reach.proto == "tcp" else None, expect, "case")

    async def probe(self, reach: Reach) -> str:
        """open, dropped or refused."""
        outcome = (await self.lab.probe(self.check_of(reach))).outcome
        return {"reply": "open", "no reply": "dropped"}.get(outcome, outcome)

    async def baseline(self, checks: Sequence[Reach]) -> dict[Reach, str]:
        """Each check's outcome before the case: what leaving the lab as found means."""
        return {reach: await self.probe(reach) for reach in checks}

    async def check(self, checks: Sequence[Reach], at: float, report: CaseReport) -> None:
        """Probe each check (retrying for a short grace); a step each, a failure for each not met."""
        for reach in checks:
            label = self.check_of(reach).label
            deadline = time.monotonic() + GRACE_S
            while True:
                outcome = await self.probe(reach)
                if reach_met(reach, outcome) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            ok = reach_met(reach, outcome)
            report.step("probe", at, f"{label}: {outcome} (expected {reach.expect})", ok=ok)
            if not ok:
                report.fail(f"~ reachability {label}: expected {reach.expect}, got {outcome}")
