"""The embedded journal: SQLite in WAL mode through aiosqlite (one writer, its own thread)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from responder.journal.base import SCHEMA, Row, SqlJournal, Tx


class _SqliteTx:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, *args: object) -> int:
        cursor = await self._db.execute(sql, args)
        return cursor.rowcount

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return list(await self._db.execute_fetchall(sql, args))  # type: ignore[arg-type]  # sqlite3.Row: by name, like a mapping


class SqliteJournal(SqlJournal):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()  # one connection: transactions must not interleave

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> SqliteJournal:
        """Open (creating if needed). `synchronous=FULL` survives power loss; NORMAL survives a process
        crash only, and is faster."""
        if synchronous not in {"FULL", "NORMAL"}:
            raise ValueError("synchronous must be FULL or NORMAL")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = sqlite3.Row  # read by column name, as asyncpg's records are
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA synchronous={synchronous}")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        ddl = SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB")
        await db.executescript(ddl)
        return cls(db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._db)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        # Under the lock all the same: on the one connection, a read between the statements of another
        # task's transaction would see that transaction's uncommitted rows.
        async with self._lock:
            yield _SqliteTx(self._db)

    async def close(self) -> None:
        await self._db.close()
