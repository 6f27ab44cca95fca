"""Containment while the same instance ingests a SIEM stream, on a real lab (built and torn down here; needs root).

- idle: Okta deliveries (one person's cut-off each, at 10/s over 4 hubs), from delivery to the set element
  and the WireGuard peer gone, read back on the hub (as `service_bench`);
- under load: the same, on other people, while benign Wazuh alerts (severity low: the bulk lane) are
  produced to the instance's Kafka topic at `--rate` a second (5,000 by default) from before the first
  cut-off to after the last; the report says how many alerts were produced, decided, and left pending.

Both in the same run, on the same service, so that their ratio holds on a shared machine where each alone
does not; the load average before and after is in the report.

    python -m bench.load_bench [--idle N] [--loaded N] [--rate N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.service_bench import PARSE_WORKERS, ROOT, SECRET, percentiles, service, webhook_containment
from responder.lab import Lab
from responder.lab.kafka import kafka_broker
from responder.lab.peers import enroll, extra_peers

WARM_UP = 20
TICK_S = 0.05  # alerts go out in small bursts, every tick, as a SIEM forwarder sends them


async def _background(bootstrap: str, topic: str, rate: int, stop: asyncio.Event) -> int:
    """Produce benign alerts at `rate` a second until `stop`; how many were produced."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate)  # behind schedule after a slow tick: catch up
            futures = []
            for n in range(sent, due):
                alert = {
                    "timestamp": "2026-03-02T10:21:44.018+0000", "id": f"load-{topic}-{n}",
                    "rule": {"id": "5402", "level": 3, "description": "bench background"},
                    "agent": {"id": "004", "name": "app1"}, "data": {"srcip": f"198.51.100.{n % 250 + 1}"},
                }  # fmt: skip
                futures.append(await producer.send(topic, json.dumps(alert).encode()))
            sent = max(sent, due)
            await asyncio.gather(*futures)
            await asyncio.sleep(TICK_S)
    finally:
        await producer.stop()
    return sent


def _siem_counts(db: Path) -> tuple[int, int]:
    """Background alerts decided and still pending (the events of Kafka deliveries)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT e.status, COUNT(*) FROM events e JOIN deliveries d ON d.id = e.delivery_id"
            " WHERE d.source <> 'okta' GROUP BY e.status"
        ).fetchall()
    counts = dict(rows)
    return int(counts.get("processed", 0)), int(counts.get("pending", 0))


async def run(idle: int, loaded: int, rate: int, bootstrap: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="responder-load-"))
    hubs = 4
    lab = Lab(f"ld{os.getpid() % 1_000_000}", hubs=hubs)
    try:
        await lab.up()
        peers = await enroll(lab, extra_peers(hubs, WARM_UP + idle + loaded))
        owners = [p["owner"] for p in peers]
        warm, calm, busy = owners[:WARM_UP], owners[WARM_UP : WARM_UP + idle], owners[WARM_UP + idle :]
        inventory = yaml.safe_load(lab.inventory_path.read_text())
        inventory["peers"] = peers
        (workdir / "inventory.yaml").write_text(yaml.safe_dump(inventory))
        topic = f"bench-load-{uuid.uuid4().hex[:6]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 3, 1), NewTopic(f"{topic}-dead", 1, 1)])
        finally:
            await admin.close()
        db = workdir / "load.db"
        config = {
            "rules": [str(ROOT / "rules")], "okta_secret": SECRET, "reconcile_interval_s": 3600,
            "monitor_interval_s": None, "journal": f"sqlite:///{db}", "inventory": str(workdir / "inventory.yaml"),
            "limits": {"actions_per_minute": 100_000, "actions_per_minute_per_rule": 100_000},
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"g-{topic}", "dead_letter_topic": f"{topic}-dead",
                      "parse_workers": PARSE_WORKERS, "topics": [{"name": topic, "format": "wazuh"}]},
        }  # fmt: skip
        async with service(config, workdir) as base:
            await asyncio.sleep(2)  # the consumer joins its group
            await webhook_containment(base, db, warm, 0.05)
            load_before = os.getloadavg()
            quiet = await webhook_containment(base, db, calm, 0.1)
            stop = asyncio.Event()
            producing = asyncio.create_task(_background(bootstrap, topic, rate, stop))
            try:
                await asyncio.sleep(3)  # the stream is flowing (and any backlog of its start built) first
                started = time.monotonic()
                under_load = await webhook_containment(base, db, busy, 0.1)
            finally:
                stop.set()
                produced = await producing
            seconds = time.monotonic() - started + 3
            decided, pending = _siem_counts(db)
            load_after = os.getloadavg()
    finally:
        await lab.down()
    return {
        "containment_idle_ms": percentiles(quiet),
        "containment_under_load_ms": percentiles(under_load),
        "background": {
            "rate_per_s": rate,
            "produced": produced,
            "produced_per_s": round(produced / seconds),
            "decided_by_end": decided,
            "pending_at_end": pending,
            "parse_workers": PARSE_WORKERS,
        },
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Webhook containment p50/p90/p99 idle and while the same instance ingests Kafka alerts "
        "(needs root: builds a lab)."
    )
    parser.add_argument("--idle", type=int, default=100, help="cut-offs measured idle (default 100)")
    parser.add_argument("--loaded", type=int, default=200, help="cut-offs measured under load (default 200)")
    parser.add_argument("--rate", type=int, default=5000, help="background Kafka alerts per second (default 5000)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "load.json", help="where to write the figures")
    args = parser.parse_args()
    with kafka_broker() as bootstrap:
        report = asyncio.run(run(args.idle, args.loaded, args.rate, bootstrap))
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
