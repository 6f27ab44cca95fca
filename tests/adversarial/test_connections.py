"""The real service against connection exhaustion: thousands of idle or slowly trickling connections held
by another process, slow bodies, more connections than the cap, and running out of open files. Webhooks
and /healthz stay answered within Okta's 3 seconds throughout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.config import Settings
from tests.support.payloads import raw
from tests.support.service import no_hubs, running

OKTA_SECRET = "Basic c2VjcmV0LXZhbHVlLWZvci1jb25uZWN0aW9ucw=="
OKTA_HEADERS = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
TOKEN = "admin-token-for-connections"
OKTA_DEADLINE_S = 3.0  # Okta gives up on an event hook after about 3 seconds


def _settings(tmp_path: Path, **listen: Any) -> Settings:
    values: dict[str, Any] = {
        "journal": f"sqlite:///{tmp_path}/journal.db", "inventory": no_hubs(tmp_path),
        "okta_secret": OKTA_SECRET, "admin_token": TOKEN,
    }  # fmt: skip
    if listen:
        values["listen"] = listen
    return Settings(**values)


@contextlib.contextmanager
def _open_files_limit(soft: int) -> Iterator[None]:
    """This process's soft limit set to `soft` (the hard one untouched), restored afterwards."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@contextlib.asynccontextmanager
async def _holder(address: tuple[str, int], idle: int, slow: int, seconds: float) -> AsyncIterator[Any]:
    """tests/support/holder.py in a process of its own (its own open-files limit), killed on the way out."""
    host, port = address
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.holder", host, str(port), str(idle), str(slow), str(seconds),
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _line(proc: Any, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        line = await proc.stdout.readline()
    assert line, "the holder process ended without a report"
    return dict(json.loads(line))


async def _answered(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, float]:
    started = time.monotonic()
    try:
        async with asyncio.timeout(OKTA_DEADLINE_S), session.request(method, url, **kw) as r:
            await r.read()
            return r.status, time.monotonic() - started
    except (TimeoutError, aiohttp.ClientError):
        return 0, time.monotonic() - started


async def test_webhooks_answer_within_3s_while_2000_idle_and_slow_connections_are_held(tmp_path: Path) -> None:
    delivery = raw("okta/batch.json")
    # The soft limit systemd gives a service that sets no LimitNOFILE; the service must cope from there.
    with _open_files_limit(1024):
        async with running(_settings(tmp_path)) as (service, base):
            assert service.address is not None
            async with _holder(service.address, idle=1000, slow=1000, seconds=20) as proc:
                ready = await _line(proc, 30)
                answers: list[tuple[str, int, float]] = []
                # A fresh connection for every request, as Okta's deliveries from many workers would come.
                connector = aiohttp.TCPConnector(force_close=True)
                async with aiohttp.ClientSession(connector=connector) as http:
                    until = time.monotonic() + 12
                    while time.monotonic() < until:
                        okta = await _answered(http, "POST", f"{base}/hooks/okta", data=delivery,
                                               headers=OKTA_HEADERS)  # fmt: skip
                        health = await _answered(http, "GET", f"{base}/healthz")
                        answers += [("okta", *okta), ("healthz", *health)]
                        await asyncio.sleep(0.25)
                report = await _line(proc, 30)
    late = [a for a in answers if a[1] != 200 or a[2] > OKTA_DEADLINE_S]
    assert len(answers) >= 20 and not late, f"{len(late)} of {len(answers)} not answered in time: {late[:5]}"
    assert ready["held"] == 2000 and report["most"] >= 2000 and report["failed"] == 0
    # Idle and trickling connections are closed after listen.idle_timeout_s (10 s) and opened again.
    assert report["closed_by_server"] >= 1000


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    return True


async def test_idle_and_trickling_connections_are_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    async with running(_settings(tmp_path, idle_timeout_s=1.0)) as (service, _):
        assert service.address is not None
        idle_r, idle_w = await asyncio.open_connection(*service.address)
        slow_r, slow_w = await asyncio.open_connection(*service.address)
        slow_w.write(b"POST /hooks/okta HTTP/1.1\r\nHost: responder\r\n")
        kept_r, kept_w = await asyncio.open_connection(*service.address)
        kept_w.write(b"GET /healthz HTTP/1.1\r\nHost: responder\r\n\r\n")
        assert (await kept_r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")

        async def trickle() -> None:
            for n in range(40):
                await asyncio.sleep(0.1)
                with contextlib.suppress(OSError):
                    slow_w.write(f"X-Trickle-{n}: {n}\r\n".encode())

        trickling = asyncio.create_task(trickle())
        try:
            closed = await asyncio.gather(*(_closed_within(r, 3.0) for r in (idle_r, slow_r, kept_r)))
        finally:
            trickling.cancel()
            for w in (idle_w, slow_w, kept_w):
                w.close()
        assert closed == [True, True, True], "idle, trickling head, idle after a keep-alive answer"


async def test_a_body_trickled_slowly_is_answered_408(tmp_path: Path) -> None:
    async with running(_settings(tmp_path, body_timeout_s=1.0)) as (service, _):
        assert service.address is not None
        reader, writer = await asyncio.open_connection(*service.address)
        head = (
            f"POST /hooks/okta HTTP/1.1\r\nHost: responder\r\nAuthorization: {OKTA_SECRET}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        writer.write(head.encode())
        started = time.monotonic()
        try:
            async with asyncio.timeout(OKTA_DEADLINE_S):
                while not reader.at_eof():
                    try:
                        async with asyncio.timeout(0.2):
                            answer = await reader.readuntil(b"\r\n\r\n")
                            break
                    except TimeoutError:
                        writer.write(b" ")
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 2.5


async def test_connections_beyond_the_cap_get_an_immediate_json_503(tmp_path: Path) -> None:
    async with running(_settings(tmp_path, max_connections=20)) as (service, base):
        assert service.address is not None
        held = [await asyncio.open_connection(*service.address) for _ in range(20)]
        try:
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection(*service.address)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: responder\r\n\r\n")
            async with asyncio.timeout(1):
                answer = await reader.read()
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503") and b"application/json" in head
            assert "at most 20" in json.loads(body)["error"]
            for _, w in held[:5]:
                w.close()
            await asyncio.sleep(0.2)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200
                async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert "responder_connections_refused_total 1.0" in await r.text()
        finally:
            for _, w in held:
                w.close()


def _open_files() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


async def test_running_out_of_files_on_accept_is_logged_at_most_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(_settings(tmp_path)) as (service, base):
        assert service.address is not None
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            # Nothing left for the listener: every accept fails with EMFILE for three seconds.
            async with _holder(service.address, idle=200, slow=0, seconds=3) as proc:
                with _open_files_limit(_open_files() + 1):
                    await asyncio.sleep(3)
                await _line(proc, 20)
        said = [r for r in caplog.records if "out of system resource" in r.getMessage()]
        assert 1 <= len(said) <= 2, f"{len(said)} log records in 3 s"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics", headers=auth) as r:
            text = await r.text()
        errors = next(line for line in text.splitlines() if line.startswith("responder_accept_errors_total"))
        assert float(errors.split()[1]) > len(said)
