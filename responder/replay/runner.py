"""Replaying a case through the real path: the service started in-process on a free loopback port with a
fresh journal and secrets of its own, each delivery sent as its source sends it (HTTP to the webhook
routes with their handshakes, Kafka produce to a broker), each delivery's decisions and actions waited for
through the admin API, then the expectations checked and, in the lab, packets sent.

In the lab every case leaves the lab as it found it: every decision still in force (or waiting for
approval) is undone through the admin API afterwards, and the run waits until the case's reachability is
back to what it was before the first delivery.

This module only sequences the parts: `settings` (the service's configuration), `session` (the running
service's admin API and journal), `sending` (each delivery as its source sends it), `expectations` (the
diff, pure), `probes` (reachability in the lab) and `restore` (leaving the lab as found).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from responder.core.decisions import action_from_dict
from responder.core.identity import IdentityMap
from responder.policy.testing import describe
from responder.replay.case import Case, format_offset
from responder.replay.clock import VirtualClock
from responder.replay.expectations import diff, enforced
from responder.replay.options import Options, ReplayError
from responder.replay.probes import LabProbes
from responder.replay.report import ActionView, CaseReport, DecisionView
from responder.replay.restore import Restorer
from responder.replay.sending import Sender, Sent
from responder.replay.session import JournalView, Session
from responder.replay.settings import Setup, prepare
from responder.service.running import ServiceExited, running

__all__ = ["CaseRun", "Options", "ReplayError", "replay_case", "replay_cases"]

_VERIFIED = {True: "verified", False: "NOT verified", None: "unverified"}


def _ms(later: str | None, earlier: datetime) -> float | None:
    if not later:
        return None
    return round((datetime.fromisoformat(later) - earlier).total_seconds() * 1000, 1)


class CaseRun:
    """One case played against one running service: the deliveries in order, what followed each read back
    into the report's timeline, then the expectations checked. `probes` is None in a dry run."""

    def __init__(
        self, case: Case, options: Options, report: CaseReport, *, setup: Setup, session: Session,
        sender: Sender, probes: LabProbes | None,
    ) -> None:  # fmt: skip
        self.case = case
        self.options = options
        self.report = report
        self.setup = setup
        self.session = session
        self.sender = sender
        self.probes = probes
        self.seen: dict[str, DecisionView] = {}
        self._names = setup.peer_names

    async def play(self) -> None:
        spec = self.case.spec
        previous = 0.0
        for n, delivery in enumerate(spec.deliveries, start=1):
            await self._move_clock(previous, delivery.at)
            previous = delivery.at
            sent = Sent(n, delivery.at, self.session.clock())
            await self.sender.deliver(delivery, sent)
            await self.session.settle(f"delivery {n}")
            await self._collect(sent)
        if spec.advance is not None:
            await self._move_clock(previous, spec.advance)
            sent = Sent(0, spec.advance, self.session.clock())
            self.report.step("clock", spec.advance, f"moved to +{format_offset(spec.advance)}: TTLs run out")
            await self.session.settle_expiry()
            await self._collect(sent)

    async def check(self) -> None:
        decisions = list(self.seen.values())
        self.report.decisions = decisions
        self.report.enforced = enforced(decisions)
        spec = self.case.spec
        identity = IdentityMap(self.setup.inventory)
        self.report.failures += diff(spec.expect, decisions, lab_mode=self.probes is not None, identity=identity)
        if self.probes is not None and spec.expect.reachability:
            at = spec.advance if spec.advance is not None else spec.deliveries[-1].at
            await self.probes.check(spec.expect.reachability, at, self.report)

    @property
    def enforced_any(self) -> bool:
        """Something was carried out on a hub."""
        return bool(enforced(list(self.seen.values())))

    async def _move_clock(self, previous: float, to: float) -> None:
        if self.options.speed is not None and to > previous:
            await asyncio.sleep((to - previous) / self.options.speed)
        self.session.clock.advance_to(to)

    def _describe(self, action: dict[str, Any]) -> str:
        return describe(action_from_dict(action), self._names)

    def _view(self, d: dict[str, Any], sent: Sent, known: DecisionView | None) -> DecisionView:
        intents = [
            ActionView(
                self._describe(i["action"]),
                i["kind"],
                i["state"],
                i["verified"],
                i.get("result"),
                _ms(i["updated_at"], sent.sent) if i["state"] in ("done", "failed") else None,
            )
            for i in d["actions"]
        ]
        return DecisionView(
            id=d["id"],
            subject=d["subject"],
            response=d["response"],
            state=d["state"],
            approval=bool(d["body"].get("requires_approval")),
            actions=[self._describe(a) for a in d["body"].get("actions", [])],
            intents=intents,
            delivery=known.delivery if known else sent.index,
            latency_ms=known.latency_ms if known else _ms(d["created_at"], sent.sent),
            score=d["body"].get("score"),
        )

    async def _collect(self, sent: Sent) -> None:
        """Read every decision back; steps for the new ones (and the new intents) of this delivery."""
        for d in await self.session.snapshot():
            known = self.seen.get(d["id"])
            view = self.seen[d["id"]] = self._view(d, sent, known)
            if known is None:
                self.report.step(
                    "decision", sent.at, f"{view.id} {view.subject} -> {view.response} [{view.state}]"
                    f" score {view.score}", latency_ms=view.latency_ms, data={"id": view.id},
                )  # fmt: skip
                for a in view.intents:
                    self.report.step(
                        "action", sent.at, f"{a.kind} {a.action}: {a.state}, {_VERIFIED[a.verified]}",
                        latency_ms=a.latency_ms, ok=a.state != "failed", data={"decision": view.id},
                    )  # fmt: skip
                continue
            if known.state != view.state:
                self.report.step("decision", sent.at, f"{view.id} {view.subject} -> {view.response}: now {view.state}")
            old = {(a.kind, a.action, a.state) for a in known.intents}
            for a in view.intents:
                if (a.kind, a.action, a.state) not in old and a.kind == "undo":
                    self.report.step("action", sent.at, f"undo {a.action}: {a.state}", latency_ms=a.latency_ms)


async def _run(case: Case, options: Options, report: CaseReport) -> None:
    clock = VirtualClock(case.spec.start)
    run_id = uuid.uuid4().hex[:10]
    with tempfile.TemporaryDirectory(prefix="responder-replay-") as directory:
        setup = await prepare(case, options, Path(directory), run_id)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
            running(setup.settings, instance="replay", clock=clock) as (_, url),
        ):
            session = Session(
                http, url, setup.secrets.admin_token, JournalView(setup.journal), clock, options.settle_timeout_s
            )
            lab = options.enforcing_lab
            probes = LabProbes(lab) if lab is not None else None
            async with Sender(case, setup, session, options, report) as sender:
                run = CaseRun(case, options, report, setup=setup, session=session, sender=sender, probes=probes)
                baseline = await probes.baseline(case.spec.expect.reachability) if probes is not None else {}
                try:
                    await run.play()
                    await run.check()
                finally:
                    if options.cleanup and probes is not None:
                        restorer = Restorer(session, probes, setup, report, timeout_s=options.restore_timeout_s)
                        await restorer.restore(baseline, enforced=run.enforced_any)


async def replay_case(case: Case, options: Options) -> CaseReport:
    report = CaseReport(case.name, str(case.path), options.mode)
    started = time.monotonic()
    try:
        await _run(case, options, report)
    except (ReplayError, ServiceExited, OSError, ValueError) as exc:
        report.failures.append(f"! could not replay: {exc}")
    report.duration_s = time.monotonic() - started
    return report


async def replay_cases(cases: Sequence[Case], options: Options) -> list[CaseReport]:
    return [await replay_case(case, options) for case in cases]
