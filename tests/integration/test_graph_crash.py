"""Entra risk polling killed mid-page (SIGKILL, `responder run` as its own process): the next start resumes
from the cursor in the journal, and each detection is one event and at most one decision."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import yaml

from responder.journal import open_journal
from tests.support.graph_contract import running_contract
from tests.support.process import ServiceProcess, free_port
from tests.support.service import event_bodies, no_hubs

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-token-for-the-graph-crash-test"


async def test_risk_polling_killed_mid_page_resumes_and_reads_each_detection_into_one_event(tmp_path: Path) -> None:
    graph = await running_contract()
    try:
        for n in range(5):  # pages of two: the kill comes while the second page is asked for
            graph.add_detection(f"user{n}@example.com", at=datetime.now(UTC) - timedelta(minutes=10 - n))
        arrived, release = graph.hold("skiptoken=2")
        port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "listen": {"port": port}, "journal": f"sqlite:///{tmp_path}/journal.db",
            "inventory": str(no_hubs(tmp_path)), "rules": [str(ROOT / "rules")], "admin_token": ADMIN,
            "entra_client_secret": graph.client_secret,
            "entra": {"tenant_id": graph.tenant, "client_id": graph.client_id, "graph_url": graph.graph_url,
                      "login_url": graph.url, "risk_polling": {"interval_s": 0.1}},
        }))  # fmt: skip
        service = ServiceProcess(config, tmp_path / "service.log", f"http://127.0.0.1:{port}")
        await service.start()
        try:
            async with asyncio.timeout(15):
                await arrived.wait()
            await service.kill()
            await _until_events(tmp_path, 2)  # page 1 is in the journal; the cursor is not
            assert await _cursor(tmp_path) is None
            release.set()
            graph._holds.clear()
            await service.start()
            await _until_events(tmp_path, 5)
            await asyncio.sleep(0.5)  # more rounds over the same detections
            decisions = await _decisions(service.base)
        finally:
            await service.stop()
    finally:
        await graph.stop()
    journal = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        events = [e for e in await event_bodies(journal) if e["type"] == "leakedCredentials"]
    finally:
        await journal.close()
    assert sorted(e["id"] for e in events) == sorted(d["id"] for d in graph.detections)
    subjects = [d["subject"] for d in decisions]
    assert len(subjects) == len(set(subjects))


async def _until_events(tmp_path: Path, n: int) -> None:
    async with asyncio.timeout(15):
        while True:
            journal = await open_journal(f"sqlite:///{tmp_path}/journal.db")
            try:
                found = [e for e in await event_bodies(journal) if e["type"] == "leakedCredentials"]
            finally:
                await journal.close()
            if len(found) >= n:
                return
            await asyncio.sleep(0.1)


async def _decisions(base: str) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/decisions", headers=headers) as r:
        assert r.status == 200
        decisions: list[dict[str, object]] = (await r.json())["decisions"]
        return decisions


async def _cursor(tmp_path: Path) -> object:
    journal = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        return await journal.source_state("entra.risk")
    finally:
        await journal.close()
