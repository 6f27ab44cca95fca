"""The benchmark's quick variant, as a guard: it fails only when a design property regresses a lot, and it
compares ratios measured in the same run on the same machine, never absolute times (bench/ has figures)."""

from __future__ import annotations

import ipaddress
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.budget_bench import batch_vs_one_by_one, recorded_events
from responder.core.actions import Action, ActionType
from responder.inventory import HubMode
from responder.lab import Lab
from responder.pep import SshHub

pytestmark = pytest.mark.lab


@pytest.fixture
async def hubs(lab: Lab) -> AsyncIterator[tuple[SshHub, SshHub]]:
    spec = lab.inventory.hub("hub1")
    agent = SshHub(spec.model_copy(update={"mode": HubMode.AGENT}))
    plain = spec.model_copy(
        update={"mode": HubMode.AGENTLESS, "ssh": spec.ssh.model_copy(update={"client_key": lab.plain_key})}
    )
    agentless = SshHub(plain)
    try:
        await agent.status()
        await agentless.status()  # both connected and warm before anything is timed
        yield agent, agentless
    finally:
        await agent.close()
        await agentless.close()


def _quarantine(n: int) -> Action:
    return Action(ActionType.QUARANTINE, "hub1", address=ipaddress.ip_address(f"10.100.0.{100 + n}"),
                  set_name="quarantine", ttl_s=30)  # fmt: skip


async def _median_ms(hub: SshHub, runs: int) -> float:
    samples = []
    for n in range(runs):
        started = time.perf_counter()
        (result,) = await hub.apply([_quarantine(n)])
        samples.append((time.perf_counter() - started) * 1000)
        assert result.verified
    return statistics.median(samples)


async def test_the_persistent_channel_stays_far_faster_than_one_exec_per_command(hubs: tuple[SshHub, SshHub]) -> None:
    agent, agentless = hubs
    persistent = await _median_ms(agent, 15)
    per_command = await _median_ms(agentless, 5)
    # The benchmark measures about 180x here; the target is 10x. Only a collapse below 5x fails.
    assert per_command / persistent >= 5, (persistent, per_command)


async def test_a_batch_of_changes_costs_far_less_than_the_same_changes_one_by_one(hubs: tuple[SshHub, SshHub]) -> None:
    agent, _ = hubs
    actions = [_quarantine(n) for n in range(100)]
    started = time.perf_counter()
    results = await agent.apply(actions)
    batched = time.perf_counter() - started
    assert all(r.verified for r in results)
    started = time.perf_counter()
    for action in actions:
        (result,) = await agent.apply([action])
        assert result.verified
    one_by_one = time.perf_counter() - started
    assert one_by_one / batched >= 5, (batched, one_by_one)


async def test_the_kafka_batch_path_costs_far_less_cpu_per_alert_than_one_alert_at_a_time(tmp_path: Path) -> None:
    """The journal's half of the Kafka path (the hand-off storing a consumer batch, the processed marks) in
    one transaction a batch against one an alert, in CPU time of this process (its SQLite thread too)."""
    _, events = recorded_events(400)
    measured = await batch_vs_one_by_one(tmp_path, events)
    # About 17-22x measured here with 400 alerts (12x with 2,000 in the budget bench). Only below 4x fails.
    assert measured["ratio"] >= 4, measured
