"""The shared journal for several instances: PostgreSQL through asyncpg."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from responder.journal.base import ADDED_COLUMNS, ADDED_INDEXES, DROPPED_INDEXES, SCHEMA, Row, SqlJournal, Tx
from responder.journal.errors import Availability, JournalUnavailable

# The server cannot store now (disk full, read-only standby, going down) or cannot be reached: retry later.
_UNAVAILABLE = (
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    OSError,
)

_MARK = re.compile(r"\?")
_SCHEMA_LOCK = 0x7265_7370  # advisory lock id: instances starting together create the schema once


def _numbered(sql: str) -> str:
    counter = itertools.count(1)  # a multi-row statement has thousands (the server allows 32,767)
    return _MARK.sub(lambda _: f"${next(counter)}", sql)


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._waiting: list[tuple[str, tuple[object, ...]]] = []
        self.writes = False  # only a write that went through says the journal stores again

    def defer(self, sql: str, *args: object) -> None:
        self.writes = self.writes or not sql.lstrip().upper().startswith("SELECT")
        self._waiting.append((sql, args))

    async def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for sql, args in waiting:
            await self._conn.execute(_numbered(sql), *args)

    async def execute(self, sql: str, *args: object) -> int:
        self.writes = self.writes or not sql.lstrip().upper().startswith("SELECT")
        await self.flush()
        status: str = await self._conn.execute(_numbered(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        self.writes = self.writes or not sql.lstrip().upper().startswith("SELECT")
        await self.flush()
        return list(await self._conn.fetch(_numbered(sql), *args))

    async def fetch_values(self, sql: str, *args: object) -> list[Sequence[Any]]:
        self.writes = self.writes or not sql.lstrip().upper().startswith("SELECT")
        await self.flush()
        records: list[asyncpg.Record] = await self._conn.fetch(_numbered(sql), *args)
        return list(records)  # asyncpg's records read by position as cheaply as by name


def _where(dsn: str) -> str:
    """The server and database, without the credentials the DSN may carry."""
    url = urlsplit(dsn)
    return f"postgresql://{url.hostname or ''}{f':{url.port}' if url.port else ''}{url.path}"


class PostgresJournal(SqlJournal):
    def __init__(self, pool: asyncpg.Pool, where: str = "postgresql") -> None:
        self._pool = pool
        self._where = where
        self.availability = Availability(where)
        # Transactions run side by side, each on a connection of the pool; bulk ones never take the last
        # two, so that a webhook's delivery or a decision never waits for a SIEM batch to give one back.
        self._bulk = asyncio.Semaphore(max(1, pool.get_max_size() - 2))

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> PostgresJournal:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=10)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute(SCHEMA.format(serial="BIGSERIAL PRIMARY KEY", blob="BYTEA"))
            for table, column, kind in ADDED_COLUMNS:
                await conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
            for index in ADDED_INDEXES:
                await conn.execute(index)
            for name in DROPPED_INDEXES:
                await conn.execute(f"DROP INDEX IF EXISTS {name}")
        return cls(pool, _where(dsn))

    @asynccontextmanager
    async def transaction(self, *, bulk: bool = False) -> AsyncIterator[Tx]:
        try:
            async with (
                self._bulk if bulk else contextlib.nullcontext(),
                self._pool.acquire() as conn,
                conn.transaction(),
            ):
                tx = _PgTx(conn)
                yield tx
                await tx.flush()
        except _UNAVAILABLE as exc:
            fault = JournalUnavailable(self._where, str(exc) or type(exc).__name__)
            self.availability.failed(fault)
            raise fault from exc
        if tx.writes:
            self.availability.succeeded()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        async with self._pool.acquire() as conn:
            yield _PgTx(conn)

    async def close(self) -> None:
        await self._pool.close()
