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

from bench import pep_bench, rules_bench, service_bench
from tests.support.kafka import kafka_broker

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "containment_ms.p50": ("<=", 10), "containment_ms.p99": ("<=", 25), "naive_ratio": (">=", 10),
    "mass_revocation_s": ("<=", 1), "rules_events_per_s": (">=", 50_000), "kafka_alerts_per_s": (">=", 20_000),
    "rss_mb_100k_subjects": ("<=", 150),
}  # fmt: skip


def _get(report: dict[str, Any], dotted: str) -> float:
    value: Any = report
    for part in dotted.split("."):
        value = value[part]
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "report.json")
    parser.add_argument("--incidents", type=int, default=520)
    args = parser.parse_args()
    rules = rules_bench.throughput(200_000, 20_000)
    memory = rules_bench.memory(100_000)
    pep = asyncio.run(pep_bench.run(100, 10_000))
    with kafka_broker() as bootstrap:
        service = asyncio.run(service_bench.run(args.incidents, 30, 100, bootstrap))
    report = {
        "containment_ms": service["containment_ms"],
        "kafka_containment_ms": service["kafka_containment_ms"],
        "naive_containment_ms": service["naive_containment_ms"],
        "naive_ratio": service["naive_ratio"],
        "mass_revocation_s": pep["mass_revocation"]["seconds"],
        "mass_revocation_verified": pep["mass_revocation"]["verified"],
        "hub_operation_ms": {"agent": pep["persistent"], "exec_per_command": pep["per_command_exec"]},
        "rules_events_per_s": rules["events_per_s"],
        "kafka_alerts_per_s": service["kafka_alerts_per_s"],
        "webhook_deliveries_per_s": service["webhook_deliveries_per_s"],
        "rss_mb_100k_subjects": memory["rss_mb_delta"],
        "machine": rules_bench.machine(),
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'figure':<28} {'measured':>12}  target")
    for key in ("containment_ms.p50", "containment_ms.p90", "containment_ms.p99", "kafka_containment_ms.p50",
                "naive_containment_ms.p50", "naive_ratio", "mass_revocation_s", "rules_events_per_s",
                "kafka_alerts_per_s", "webhook_deliveries_per_s", "rss_mb_100k_subjects"):  # fmt: skip
        op, target = TARGETS.get(key, ("", ""))
        print(f"{key:<28} {_get(report, key):>12,.2f}  {op} {target}")
    print(f"machine: {report['machine']}")


if __name__ == "__main__":
    main()
