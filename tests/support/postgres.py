"""A real PostgreSQL server (Debian's `postgresql` package) on loopback, owned by one test session."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _bin_dir() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed; run `make install` as root")
    return versions[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*argv: str) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a DSN for a fresh cluster on 127.0.0.1; the cluster and its files are removed afterwards."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="responder-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    try:
        subprocess.run(
            _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "responder", "--auth=trust", "-E", "UTF8"),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            _as_postgres(
                str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30", "start",
                "-o", f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=on -c max_connections=200",
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "responder", "responder"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://responder@127.0.0.1:{port}/responder"
    finally:
        subprocess.run(
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


async def new_database(dsn: str, prefix: str) -> str:
    """A fresh, empty database on the session's cluster: its DSN. For tests that need a journal of their own."""
    import uuid

    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"
