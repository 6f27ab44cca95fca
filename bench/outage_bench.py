"""Enforcement through a hub outage (issue 17), through the real service, on a real lab (built and torn down
here; needs root).

A lab of four hubs with 25 people on each (extra WireGuard peers, each with its owner), and `responder run`
as a process with Okta webhooks, an operation timeout of 2 s, the hub monitor at its default interval and the
periodic full reconcile pushed out to an hour, so what is measured is convergence, not a reconcile pass.
Once the responder holds its agent channel to every hub, hub1's SSH management path is partitioned (nft
drops its packets in both directions inside hub1) for 60 s. During the partition 100 cut-off decisions
arrive, one for every person, over the first 20 s; once they are all decided (about 21 s in), 5 of hub1's
people are taken back through the admin API (undo). Then the partition heals. Figures:

- `heal_to_verified_s`: for every hub1 action the journal holds (the apply intents of decisions in force and
  the undo intents), its verification time (the journal's `updated_at` of the `done` intent) minus the heal
  (the moment the nft rule is gone from hub1);
- `other_hubs_containment_ms`: arrival to verification of the decisions on hubs 2-4 while hub1 is down
  (they must not wait for it);
- `ran_unobserved`: once everything is verified, 30 s later (longer than TCP would take to retransmit a
  request left queued on a connection the responder gave up on), every hub is read from inside itself and
  compared with the journal: an action the hub disagrees with is one that ran, or did not, behind the
  responder's back. Must be 0.

    python -m bench.outage_bench [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.service_bench import ROOT, SECRET, _okta, percentiles, service
from responder.lab import Lab, faults
from responder.lab.faults import HubState
from responder.lab.peers import enroll, extra_peers

ADMIN_TOKEN = "bench-admin-token"  # noqa: S105 - a bench value
HUBS = 4
PEOPLE_PER_HUB = 25
DOWN = "hub1"
PARTITION_S = 60.0
ARRIVALS_S = 20.0  # the decisions arrive over the first 20 s of the partition
UNDONE = 5  # hub1 people taken back during the partition
QUIET_S = 30.0  # after all is verified: longer than TCP retransmission would take to deliver a queued request
OPERATION_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class IntentRow:
    """One intent as the journal holds it, with its decision's subject and state."""

    decision_id: str
    subject: str
    decision_state: str
    kind: str
    action: dict[str, Any]
    state: str
    verified: bool
    updated_at: float

    @property
    def hub(self) -> str:
        return str(self.action["hub"])

    @property
    def settled(self) -> bool:
        return self.state == "done" and self.verified


def journal_rows(db: Path) -> list[IntentRow]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT d.id, d.subject, d.state, i.kind, i.action, i.state, i.verified, i.updated_at"
            " FROM decisions d JOIN intents i ON i.decision_id = d.id ORDER BY d.id, i.ordinal"
        ).fetchall()
    return [
        IntentRow(d, subject, d_state, kind, json.loads(action), state, bool(verified),
                  datetime.fromisoformat(at).timestamp())
        for d, subject, d_state, kind, action, state, verified, at in rows
    ]  # fmt: skip


def in_force(rows: Iterable[IntentRow]) -> list[IntentRow]:
    """What must be verified on the hubs: the apply intents of active decisions and every undo intent."""
    return [
        r for r in rows if (r.kind == "apply" and r.decision_state == "active") or r.kind == "undo"
    ]  # fmt: skip


def heal_to_verified(rows: Iterable[IntentRow], hub: str, healed_at: float) -> list[float]:
    """Seconds from the heal to each of the hub's actions verified (those verified so far)."""
    return [r.updated_at - healed_at for r in in_force(rows) if r.hub == hub and r.settled]


def containment_ms(rows: Iterable[IntentRow], sent: Mapping[str, float]) -> list[float]:
    """Per subject in `sent` whose decision's containing actions are all verified: arrival to the last of
    them verified. The flow kill that follows is not part of containment (as in service_bench)."""
    verified: dict[str, float] = {}
    open_: set[str] = set()
    for r in rows:
        if r.kind != "apply" or r.subject not in sent or r.action["type"] == "kill_flows":
            continue
        if r.settled:
            verified[r.subject] = max(verified.get(r.subject, 0.0), r.updated_at)
        else:
            open_.add(r.subject)
    return [(at - sent[s]) * 1000 for s, at in verified.items() if s not in open_]


def disagreements(rows: Sequence[IntentRow], hubs: HubState) -> list[str]:
    """Each action where the hub and the journal disagree. Active decision: every apply done, verified and in
    effect, and none in effect that the journal does not show verified. Undone decision: no effect left
    (peer back, element back), whatever became of its apply intents."""
    wrong = []
    for r in rows:
        if r.kind != "apply" or r.decision_state not in {"active", "undone"}:
            continue
        effect = hubs.in_effect(r.action)
        what = f"{r.decision_id} {r.action['type']} on {r.hub}"
        if r.decision_state == "undone":
            if effect:
                wrong.append(f"{what}: undone, still in effect on the hub")
        elif not r.settled:
            wrong.append(f"{what}: {r.state}, verified={r.verified}, in effect on the hub: {effect}")
        elif effect is False:
            wrong.append(f"{what}: verified, not in effect on the hub")
    return wrong


def _with_max(samples: list[float], digits: int = 2) -> dict[str, float]:
    return {**percentiles(samples), "max": round(max(samples), digits)} if samples else {"n": 0}


async def _post(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> None:
    async with http.post(url, **kwargs) as r:
        assert r.status in {200, 202}, await r.text()


async def _wait_channels(lab: Lab, hubs: Sequence[str], timeout: float = 30) -> None:
    """Until the responder's agent runs on every hub: a request during the partition then goes out on an
    established connection and can sit in its TCP buffers, the case that ran unobserved before issue 17."""
    deadline = time.monotonic() + timeout
    while not all(faults.agents(lab, h) for h in hubs):
        assert time.monotonic() < deadline, "the responder did not open its agent channel to every hub"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # and the monitor's first request answered on it


async def _wait(db: Path, done: Callable[[list[IntentRow]], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(journal_rows(db)):
            return True
        await asyncio.sleep(0.1)
    return False


async def _outage(lab: Lab, base: str, db: Path, people: list[dict[str, Any]]) -> dict[str, Any]:
    hubs = [f"hub{i}" for i in range(1, HUBS + 1)]
    hub_of = {f"user:{p['owner']}": str(p["hub"]) for p in people}
    sent: dict[str, float] = {}
    spacing = ARRIVALS_S / len(people)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    await _wait_channels(lab, hubs)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with faults.partitioned(lab, DOWN):
            partitioned_at = time.time()
            for p in people:
                sent[f"user:{p['owner']}"] = time.time()
                await _post(
                    http, f"{base}/hooks/okta", data=_okta(str(p["owner"])),
                    headers={"Authorization": SECRET, "Content-Type": "application/json"},
                )  # fmt: skip
                await asyncio.sleep(spacing)
            decided = await _wait(db, lambda rows: {r.subject for r in rows} >= set(sent), 20)
            assert decided, "not every delivery was decided"
            others = [s for s in sent if hub_of[s] != DOWN]
            # The other hubs' decisions, verified while hub1 is still down.
            await _wait(db, lambda rows: len(containment_ms(rows, {s: sent[s] for s in others})) == len(others), 20)
            others_ms = containment_ms(journal_rows(db), {s: sent[s] for s in others})
            taken_back = sorted({r.decision_id for r in journal_rows(db) if hub_of[r.subject] == DOWN})[:UNDONE]
            await asyncio.gather(*(
                _post(http, f"{base}/api/decisions/{d}/undo", headers=admin, json={"actor": "outage-bench"})
                for d in taken_back
            ))  # fmt: skip
            undone_at = time.time() - partitioned_at
            await asyncio.sleep(max(0.0, partitioned_at + PARTITION_S - time.time()))
        healed_at = time.time()

    def down_settled(rows: list[IntentRow]) -> bool:
        mine = [r for r in in_force(rows) if r.hub == DOWN]
        return bool(mine) and all(r.settled for r in mine)

    converged = await _wait(db, down_settled, 120)
    after_heal = time.time() - healed_at
    rows = journal_rows(db)
    heal = heal_to_verified(rows, DOWN, healed_at)
    await asyncio.sleep(QUIET_S)
    rows = journal_rows(db)
    sets = {(r.hub, str(r.action["set"])) for r in rows if "set" in r.action}
    wrong = disagreements(rows, await HubState.read(lab, hubs, sets))
    decisions = {r.decision_id: r for r in rows}
    return {
        "partition_s": round(healed_at - partitioned_at, 1),
        "decisions": len(decisions),
        "decisions_per_hub": {h: sum(1 for r in decisions.values() if hub_of[r.subject] == h) for h in hubs},
        "undone_during_partition": len(taken_back),
        "undone_at_s": round(undone_at, 1),
        "actions_on_partitioned_hub": len([r for r in in_force(rows) if r.hub == DOWN]),
        "heal_to_verified_s": _with_max(heal),
        "converged_within_s": round(after_heal, 1) if converged else None,
        "other_hubs_containment_ms": _with_max(others_ms),
        "all_verified": all(r.settled for r in in_force(rows)),
        "ran_unobserved": len(wrong),
        "ran_unobserved_examples": wrong[:5],
        "quiet_s": QUIET_S,
    }


async def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="responder-bench-outage-"))
    lab = Lab(f"bo{os.getpid() % 1_000_000}", hubs=HUBS)
    try:
        await lab.up()
        people = await enroll(
            lab, extra_peers(HUBS, HUBS * PEOPLE_PER_HUB, name="outage", domain="outage.bench.example")
        )
        inventory = yaml.safe_load(lab.inventory_path.read_text())
        inventory["peers"] = people
        (workdir / "inventory.yaml").write_text(yaml.safe_dump(inventory))
        db = workdir / "outage.db"
        config = {
            "journal": f"sqlite:///{db}", "inventory": str(workdir / "inventory.yaml"),
            "rules": [str(ROOT / "rules")], "okta_secret": SECRET, "admin_token": ADMIN_TOKEN,
            "reconcile_interval_s": 3600, "enforcement": {"operation_timeout_s": OPERATION_TIMEOUT_S},
            "limits": {"actions_per_minute": 100_000, "actions_per_minute_per_rule": 100_000},
        }  # fmt: skip
        async with service(config, workdir) as base:
            return await _outage(lab, base, db, people)
    finally:
        await lab.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "outage.json")
    args = parser.parse_args()
    started = time.monotonic()
    report = asyncio.run(run())
    report["bench_s"] = round(time.monotonic() - started, 1)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
