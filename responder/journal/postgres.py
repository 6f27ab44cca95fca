"""The shared journal for several instances: PostgreSQL through asyncpg."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from responder.journal.base import SCHEMA, Row, SqlJournal, Tx

_MARK = re.compile(r"\?")
_SCHEMA_LOCK = 0x7265_7370  # advisory lock id: instances starting together create the schema once


def _numbered(sql: str) -> str:
    counter = iter(range(1, 1000))
    return _MARK.sub(lambda _: f"${next(counter)}", sql)


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._waiting: list[tuple[str, tuple[object, ...]]] = []

    def defer(self, sql: str, *args: object) -> None:
        self._waiting.append((sql, args))

    async def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for sql, args in waiting:
            await self._conn.execute(_numbered(sql), *args)

    async def execute(self, sql: str, *args: object) -> int:
        await self.flush()
        status: str = await self._conn.execute(_numbered(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        await self.flush()
        return list(await self._conn.fetch(_numbered(sql), *args))


class PostgresJournal(SqlJournal):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> PostgresJournal:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=10)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute(SCHEMA.format(serial="BIGSERIAL PRIMARY KEY", blob="BYTEA"))
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._pool.acquire() as conn, conn.transaction():
            tx = _PgTx(conn)
            yield tx
            await tx.flush()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        async with self._pool.acquire() as conn:
            yield _PgTx(conn)

    async def close(self) -> None:
        await self._pool.close()
