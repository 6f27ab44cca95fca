"""Enforcement benchmark on a real 4-hub lab (built and torn down here; needs root).

- per-operation latency of the persistent path (hub agent, one channel) against one exec channel per
  command (agentless), in the same run, for the same operation (add + verify a quarantine element);
- mass revocation: 10,000 addresses removed from `admin_devices` across 4 hubs, each hub one
  transaction, verified by reading the sets back.

    python -m bench.pep_bench [--ops N] [--revocations N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from responder.core.actions import Action, ActionType
from responder.inventory import HubMode, HubSpec
from responder.lab import Lab
from responder.pep import SshHub

ROOT = Path(__file__).resolve().parents[1]


def _spec(lab: Lab, hub: str, mode: HubMode) -> HubSpec:
    spec = lab.inventory.hub(hub)
    key = lab.agent_key if mode is HubMode.AGENT else lab.plain_key
    return spec.model_copy(update={"mode": mode, "ssh": spec.ssh.model_copy(update={"client_key": key})})


async def latency(lab: Lab, mode: HubMode, ops: int) -> dict[str, float]:
    hub = SshHub(_spec(lab, "hub1", mode))
    try:
        await hub.status()  # connect and warm up outside the measurement
        samples = []
        for i in range(ops):
            action = Action(
                ActionType.QUARANTINE, "hub1", address=ipaddress.ip_address(f"10.100.0.{100 + i % 100}"),
                set_name="quarantine", ttl_s=60,
            )  # fmt: skip
            started = time.perf_counter()
            (result,) = await hub.apply([action])
            samples.append((time.perf_counter() - started) * 1000)
            assert result.verified, result.detail
        samples.sort()
        return {
            "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
            "ops": ops,
        }
    finally:
        await hub.close()


def _addresses(hub_index: int, count: int) -> list[str]:
    base = int(ipaddress.ip_address(f"10.{101 + hub_index}.0.0"))
    return [str(ipaddress.ip_address(base + n + 1)) for n in range(count)]


async def mass_revocation(lab: Lab, total: int) -> dict[str, Any]:
    hubs = [SshHub(_spec(lab, f"hub{i}", HubMode.AGENT)) for i in range(1, 5)]
    per_hub = total // len(hubs)
    try:
        # Load each hub's admin_devices with its share (setup, not measured), as the hub's owner enrolls
        # devices: with nft on the hub. The agent adds to an allowing set only what it took away itself.
        for i, hub in enumerate(hubs):
            elements = ", ".join(_addresses(i, per_hub))
            script = f"add element inet zerotrust admin_devices {{ {elements} }}\n"
            await lab.exec(hub.name, "nft", "-f", "-", stdin=script, check=True)
            # Connected and the agent warm (libnftables loaded) outside the measurement, as in service.
            loaded = await hub.call("list_set", {"table": "zerotrust", "set": "admin_devices"})
            assert len(loaded["elements"]) > per_hub
        actions = [
            [Action(ActionType.DELETE_ELEMENT, hub.name, address=ipaddress.ip_address(a), set_name="admin_devices")
             for a in _addresses(i, per_hub)]
            for i, hub in enumerate(hubs)
        ]  # fmt: skip
        started = time.perf_counter()
        results = await asyncio.gather(*(hub.apply(acts) for hub, acts in zip(hubs, actions, strict=True)))
        elapsed = time.perf_counter() - started
        flat = [r for rs in results for r in rs]
        remaining = 0
        for hub in hubs:
            remaining += len(
                set((await hub.call("list_set", {"table": "zerotrust", "set": "admin_devices"}))["elements"])
                - {"10.100.0.10", "10.100.1.10", "10.100.2.10", "10.100.3.10"}
            )
        return {
            "revocations": len(flat),
            "hubs": len(hubs),
            "seconds": round(elapsed, 3),
            "verified": all(r.verified for r in flat) and remaining == 0,
        }
    finally:
        for hub in hubs:
            await hub.close()


async def run(ops: int, revocations: int) -> dict[str, Any]:
    lab = Lab(f"b{os.getpid() % 10_000_000}", hubs=4)
    try:
        await lab.up()
        persistent = await latency(lab, HubMode.AGENT, ops)
        per_command = await latency(lab, HubMode.AGENTLESS, ops)
        mass = await mass_revocation(lab, revocations)
    finally:
        await lab.down()
    return {
        "persistent": persistent,
        "per_command_exec": per_command,
        "persistent_speedup": round(per_command["p50_ms"] / persistent["p50_ms"], 1),
        "mass_revocation": mass,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=100)
    parser.add_argument("--revocations", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "pep.json")
    args = parser.parse_args()
    report = asyncio.run(run(args.ops, args.revocations))
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    p, c, m = report["persistent"], report["per_command_exec"], report["mass_revocation"]
    print(f"persistent (agent): p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms per verified operation")
    print(f"one exec per command: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms -> {report['persistent_speedup']}x")
    print(
        f"mass revocation: {m['revocations']:,} across {m['hubs']} hubs in {m['seconds']} s, verified={m['verified']}"
    )


if __name__ == "__main__":
    main()
