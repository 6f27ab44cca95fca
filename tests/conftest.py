"""Session fixtures that own real resources: the lab (namespaces, WireGuard, sshd)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from responder.journal import Journal, open_journal
from responder.lab import Lab
from responder.lab.lab import STATE_ROOT

TEST_PREFIX = "t"


def root_network_snapshot() -> dict[str, object]:
    """The root namespace's links, addresses and routes, as `ip -j` reports them."""

    def ip(*args: str) -> object:
        out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    return {"link": ip("link", "show"), "addr": ip("addr", "show"), "route": ip("route", "show")}


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def _sweep_stale_test_labs() -> None:
    """Labs left by a test run that was killed: their prefix names a pid that no longer runs."""
    if not STATE_ROOT.exists():
        return
    for state in STATE_ROOT.iterdir():
        name = state.name
        if name.startswith(TEST_PREFIX) and name[1:].isdigit() and not _pid_alive(int(name[1:])):
            await Lab(name, 1).down()


@dataclass
class LabSession:
    lab: Lab
    root_before: dict[str, object]


@pytest.fixture(scope="session")
async def lab_session() -> AsyncIterator[LabSession]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (they build network namespaces); run `make test` as root")
    await _sweep_stale_test_labs()
    before = root_network_snapshot()
    lab = Lab(f"{TEST_PREFIX}{os.getpid() % 10_000_000}", hubs=1)
    try:
        await lab.up()
        yield LabSession(lab, before)
    finally:
        await lab.down()


@pytest.fixture(scope="session")
async def lab(lab_session: LabSession) -> Lab:
    """A started one-hub lab (hub1, admin1, app1, soc), shared by the session and torn down at its end."""
    return lab_session.lab


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL cluster on loopback for the session."""
    from tests.support.postgres import postgres_server

    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
async def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A journal's URL on each engine: a new SQLite file, or the session's PostgreSQL with an empty schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/journal.db"
        return
    import asyncpg

    dsn: str = request.getfixturevalue("postgres_dsn")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    yield dsn


@pytest.fixture
async def journal(journal_url: str) -> AsyncIterator[Journal]:
    """An open journal on each engine (`journal_url`), closed after the test."""
    j = await open_journal(journal_url)
    try:
        yield j
    finally:
        await j.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka-protocol broker (Tansu) on loopback for the session: its bootstrap address."""
    from responder.lab.kafka import kafka_broker

    with kafka_broker() as bootstrap:
        yield bootstrap
