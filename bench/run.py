"""`make bench`: every benchmark in one run, on this machine, into bench/report.json and a short table.

Each part builds (and tears down) its own lab; the figures are what this machine measured, with the
machine named in the report. Nothing here is a test: bench/ measures, tests/lab/test_regression_guard.py
guards the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bench import budget_bench, load_bench, outage_bench, pep_bench, rules_bench, service_bench
from responder.lab.kafka import kafka_broker

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    # The median of the repetitions: one run on a shared machine also measures its neighbours.
    "containment_ms_repetitions.p50.median": ("<=", 10), "containment_ms_repetitions.p99.median": ("<=", 25),
    "naive_ratio": (">=", 10),
    "mass_revocation_s": ("<=", 1), "rules_events_per_s": (">=", 50_000), "kafka_alerts_per_s": (">=", 20_000),
    "rss_mb_100k_subjects": ("<=", 150),
    # issue 17: one hub of four partitioned for 60 s while 100 decisions arrive; nothing may run unobserved.
    "outage.heal_to_verified_s.p99": ("<=", 5), "outage.ran_unobserved": ("<=", 0),
    # issue 22: a cut-off while the same instance ingests 5,000 Kafka alerts a second.
    "containment_under_load_ms.p99": ("<=", 25),
}  # fmt: skip


# The CPU budget per Kafka alert of the code before the batch-shaped pipeline (run E, commit 186d97b, the
# report committed with it), beside each run's own: what each stage cost before, measured the same way.
BUDGET_BEFORE = {
    "source": "run E, commit 186d97b (bench/report.json of that commit)",
    "stages_us": {"fetch": 3.2, "decode": 3.0, "map": 102.1, "handback": 45.2, "journal": 73.6, "take": 13.3,
                  "decide": 20.1, "mark": 34.8, "commit": 0.4},
    "service_process_us": 190.6, "service_process_no_workers_us": 250.5, "batch": 1000,
}  # fmt: skip

# Why a target can be missed, from profiles of this design (README, Performance): written into the report
# next to any target the run missed, with the measured shortfall.
WHY_MISSED = {
    "containment_under_load_ms.p99": (
        "measured inside the service at 5,000 alerts/s (README, Performance): the responder's part, from the "
        "delivery to the request on the hub's channel, is ~10-40 ms (waiting for the journal's thread, which "
        "writes the stream's slices, and for the interpreter lock both threads share); the rest is the hub's "
        "part, ~100 ms on average, because on this 2-core machine the lab's hubs (sshd, the agent, "
        "wireguard-go) share the cores with a saturated instance, the broker and the producer; in production "
        "a hub is another machine"
    ),
    "containment_ms_repetitions.p50.median": (
        "before a hub is touched, two durable journal commits (the delivery; the decision with its intents), "
        "each an fsync, and the pipeline's turn in between; then one SSH round trip to the hub agent, which "
        "removes the peer (reading wireguard-go's whole peer list before and after) and keeps the cut-off in "
        "the hub's own files (wg0.conf and the nft include, each fsynced with its directory) before it "
        "answers, so that a reboot cannot bring the peer back; on an idle VM each wake-up costs more (an SSH "
        "round trip ~1.2 ms at 10 incidents a second against ~0.4 ms back to back). Run D's code measured "
        "back to back with run E's was 14.1 ms at p50 on this VM (8.9 ms in run D): the VM is slower than it was"
    ),
    "containment_ms_repetitions.p99.median": "see containment_ms_repetitions.p50.median",
    "rules_events_per_s": (
        "one Python core: CEL conditions and the per-subject risk sums dominate; the figure varies by "
        "10-20% between runs on a shared machine"
    ),
    "kafka_alerts_per_s": (
        "the service process: ~110-135 us of CPU per alert (kafka_cpu_budget_us; 250 before the batch-shaped "
        "pipeline, kafka_cpu_budget_us_before), two thirds of it on the event loop under one interpreter lock, "
        "the rest in the journal's thread (SQLite: eight b-trees per event, and its processed mark a second "
        "write), which waits for that lock between statements; 20,000/s would need <= 50 us on one core. More "
        "needs more instances (scale-out mode: one consumer group, a shared PostgreSQL journal)"
    ),
}


def assess(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target: measured, wanted, met, and for a miss how far off and why."""
    out: dict[str, dict[str, Any]] = {}
    for key, (op, target) in TARGETS.items():
        measured = _get(report, key)
        met = measured <= target if op == "<=" else measured >= target
        entry: dict[str, Any] = {"measured": measured, "target": f"{op} {target}", "met": met}
        if not met:
            entry["short_by"] = round(abs(measured - target), 2)
            # A target of 0 (nothing may go wrong) has no percentage to miss it by.
            entry["short_by_percent"] = round(abs(measured - target) / target * 100, 1) if target else None
            entry["why"] = WHY_MISSED.get(key, "not analysed")
        out[key] = entry
    return out


def _get(report: dict[str, Any], dotted: str) -> float:
    value: Any = report
    for part in dotted.split("."):
        value = value[part]
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "report.json")
    parser.add_argument(
        "--incidents", type=int, default=520, help="webhook incidents: 20 warm up, the rest in 5 repetitions"
    )
    parser.add_argument("--budget-alerts", type=int, default=20_000, help="recorded alerts for the CPU budget")
    args = parser.parse_args()
    rules = rules_bench.throughput(200_000, 20_000)
    memory = rules_bench.memory_in_fresh_process(100_000)
    memory_1m = rules_bench.memory_in_fresh_process(1_000_000)
    pep = asyncio.run(pep_bench.run(100, 10_000))
    with kafka_broker() as bootstrap:
        service = asyncio.run(service_bench.run(args.incidents, 30, 100, bootstrap))
        budget = asyncio.run(budget_bench.run(bootstrap, args.budget_alerts))
        load = asyncio.run(load_bench.run(100, 200, 5000, bootstrap))
    outage = asyncio.run(outage_bench.run())
    report = {
        "containment_ms": service["containment_ms"],
        "containment_ms_repetitions": service["containment_ms_repetitions"],
        "kafka_containment_ms": service["kafka_containment_ms"],
        "naive_containment_ms": service["naive_containment_ms"],
        "naive_ratio": service["naive_ratio"],
        "mass_revocation_s": pep["mass_revocation"]["seconds"],
        "mass_revocation_verified": pep["mass_revocation"]["verified"],
        "hub_operation_ms": {"agent": pep["persistent"], "exec_per_command": pep["per_command_exec"]},
        "rules_events_per_s": rules["events_per_s"],
        "rules_events_per_s_runs": rules["runs_events_per_s"],
        "kafka_alerts_per_s": service["kafka_alerts_per_s"],
        "kafka_alerts_per_s_runs": service["kafka_alerts_per_s_runs"],
        "kafka_parse_workers": service["kafka_parse_workers"],
        "webhook_deliveries_per_s": service["webhook_deliveries_per_s"],
        # CPU per Kafka alert, stage by stage, each run on its own on the same recorded alerts (budget_bench).
        "kafka_cpu_budget_us": budget,
        "kafka_cpu_budget_us_before": BUDGET_BEFORE,
        # The whole process with 100k subjects tracked (interpreter, engine, rules), as an operator sees it;
        # the part the subjects take is the delta.
        "rss_mb_100k_subjects": memory["rss_mb_total"],
        "rss_mb_100k_subjects_delta": memory["rss_mb_delta"],
        # The engine's default limit (limits.max_subjects): what a flood of distinct names can cost at most.
        "rss_mb_1m_subjects": memory_1m["rss_mb_total"],
        "rss_mb_1m_subjects_delta": memory_1m["rss_mb_delta"],
        "outage": outage,
        # Webhook cut-offs while the same instance ingests benign Kafka alerts (the bulk lane), and the same
        # run's idle figure beside it, with what the background stream did and the load average.
        "containment_under_load_ms": load["containment_under_load_ms"],
        "under_load": load,
        "machine": rules_bench.machine(),
    }
    report["targets"] = assess(report)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    keys = ("containment_ms.p50", "containment_ms.p90", "containment_ms.p99",
            "containment_ms_repetitions.p50.min", "containment_ms_repetitions.p50.median",
            "containment_ms_repetitions.p50.max", "containment_ms_repetitions.p99.min",
            "containment_ms_repetitions.p99.median", "containment_ms_repetitions.p99.max",
            "kafka_containment_ms.p50", "kafka_cpu_budget_us.service_process_us",
            "naive_containment_ms.p50", "naive_ratio", "mass_revocation_s", "rules_events_per_s",
            "kafka_alerts_per_s", "webhook_deliveries_per_s", "rss_mb_100k_subjects", "rss_mb_1m_subjects",
            "outage.heal_to_verified_s.p50", "outage.heal_to_verified_s.p99",
            "outage.other_hubs_containment_ms.p99", "outage.ran_unobserved", "under_load.containment_idle_ms.p99",
            "containment_under_load_ms.p50", "containment_under_load_ms.p99")  # fmt: skip
    width = max(map(len, keys))
    print(f"{'figure':<{width}} {'measured':>12}  target")
    for key in keys:
        op, target = TARGETS.get(key, ("", ""))
        print(f"{key:<{width}} {_get(report, key):>12,.2f}  {op} {target}")
    print(f"machine: {report['machine']}")
    for key, entry in report["targets"].items():
        if not entry["met"]:
            off = entry["short_by_percent"]
            by = f"off by {off}%" if off is not None else f"off by {entry['short_by']:,}"
            print(f"missed: {key} {entry['measured']:,} (target {entry['target']}, {by})")


if __name__ == "__main__":
    main()
