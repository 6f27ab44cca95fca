"""Secrets: an empty or short one is refused at start, and none is kept in the journal, which only its
owner can read."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from responder.config import MIN_SECRET_CHARS
from responder.journal import open_journal
from tests.support.payloads import payload
from tests.support.service import no_hubs, running, settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT_STATE = "graph-client-state-0f3a9c"  # a real one's length: Graph allows up to 128 characters


def _run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`responder run` as an operator starts it; one that starts is stopped after 15 s (and fails)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    command = [
        sys.executable, "-m", "responder", "run", "--listen", "127.0.0.1:0",
        "--journal", f"sqlite:///{tmp_path}/journal.db", "--inventory", str(no_hubs(tmp_path)),
    ]  # fmt: skip
    return subprocess.run(command, env=clean | env, cwd=ROOT, capture_output=True, text=True, timeout=15, check=False)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RESPONDER_ADMIN_TOKEN": ""}, "admin_token is empty"),
        ({"RESPONDER_OKTA_SECRET": "   "}, "okta_secret is empty"),
        ({"RESPONDER_ENTRA_CLIENT_STATE": "abc"}, "entra_client_state is too short"),
        ({"RESPONDER_SSF_AUTHORIZATION": "Bearer x"}, "ssf_authorization is too short"),
        ({"RESPONDER_ADMIN_TOKEN_FILE": "{tmp}/admin-token"}, "admin_token (read from {tmp}/admin-token) is too short"),
    ],
)
def test_run_refuses_to_start_with_an_empty_or_short_secret(tmp_path: Path, env: dict[str, str], named: str) -> None:
    (tmp_path / "admin-token").write_text("fifteen-chars!!\n")  # one short of the minimum
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    done = _run(tmp_path, env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    assert named.format(tmp=tmp_path) in lines[0]
    assert f"at least {MIN_SECRET_CHARS} characters" in lines[0]
    assert "fifteen-chars" not in done.stderr  # the value itself is never said
    assert not (tmp_path / "journal.db").exists()  # refused before anything was opened


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_the_entra_client_state_never_reaches_the_journal_and_the_journal_is_private(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    directory = tmp_path / "journal"  # created by the service
    s = settings(
        journal=f"sqlite:///{directory}/journal.db", entra_client_state=CLIENT_STATE, inventory=no_hubs(tmp_path)
    )
    notification = payload("entra/notification.json")
    notification["value"][0]["clientState"] = CLIENT_STATE
    lifecycle = payload("entra/lifecycle.json")
    for item in lifecycle["value"]:
        item["clientState"] = CLIENT_STATE
    async with running(s) as (_, base):
        async with http.post(f"{base}/hooks/entra", json=notification) as r:
            assert r.status == 202
        async with http.post(f"{base}/hooks/entra/lifecycle", json=lifecycle) as r:
            assert r.status == 202
        journal = await open_journal(s.journal)
        try:
            for _ in range(100):  # decided, so every table that keeps a copy has had its chance
                if (await journal.counts()).get("events.processed") == 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await journal.close()
        files = sorted(directory.iterdir())
        # While running: the database and its write-ahead log, where a fresh write sits first.
        assert {f.name for f in files} >= {"journal.db", "journal.db-wal"}
        assert [f.name for f in files if CLIENT_STATE.encode() in f.read_bytes()] == []
        assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o600" for f in files}
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [f.name for f in directory.iterdir() if CLIENT_STATE.encode() in f.read_bytes()] == []


async def test_an_existing_journal_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    async with running(settings(journal=f"sqlite:///{path}", inventory=no_hubs(tmp_path))):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
