"""The embedded journal: SQLite in WAL mode, on one connection that lives in a thread of its own.

Every trip to that thread costs a wake-up on each side, which on an idle machine is a good part of a
millisecond; so a transaction makes as few as it can: `BEGIN` goes with its first statement, deferred
statements (`Tx.defer`) go with the next one or with `COMMIT`. Transactions take turns on the connection,
and a bulk one (a SIEM batch) lets any other queued go first (`_Turns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from responder.journal.base import (
    _PART,
    ADDED_COLUMNS,
    ADDED_INDEXES,
    DROPPED_INDEXES,
    EVENT_INSERT,
    MARK_PROCESSED,
    SCHEMA,
    Row,
    SqlJournal,
    Statement,
    Tx,
    _marks,
    _parts,
    _rows,
    accept_statements,
    takeover_statements,
)
from responder.journal.errors import Availability, JournalUnavailable
from responder.journal.records import Accepted, DeliveryRecord, EventOutcome, EventRecord, Lane

log = logging.getLogger(__name__)
T = TypeVar("T")
# Primary result codes that mean "nothing can be stored now" rather than a bug: BUSY, READONLY, IOERR,
# FULL, CANTOPEN. Extended codes (SQLITE_IOERR_WRITE, ...) carry the primary one in their low byte.
_UNAVAILABLE = {5, 8, 10, 13, 14}
_READING = ("SELECT", "BEGIN", "COMMIT")


def _tuples(db: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor whose rows are plain tuples (the connection's are `sqlite3.Row`, read by name)."""
    cursor = db.cursor()
    cursor.row_factory = None
    return cursor


def _execute_all(db: sqlite3.Connection, statements: list[Statement]) -> sqlite3.Cursor:
    """Statements one after another (in the connection's thread); the cursor of the last."""
    cursor = db.cursor()
    for sql, args in statements:
        cursor = db.execute(sql, args)
    return cursor


class _Connection:
    """The connection and the one thread that uses it: the event loop never waits on the disk."""

    def __init__(self, db: sqlite3.Connection, thread: ThreadPoolExecutor, path: Path) -> None:
        self._db = db
        self._thread = thread
        self._path = path

    @classmethod
    async def open(cls, path: Path) -> _Connection:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        connect = lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # noqa: E731
        try:
            db = await asyncio.get_running_loop().run_in_executor(thread, connect)
        except sqlite3.Error as exc:
            thread.shutdown(wait=False)
            raise _unavailable(path, exc) from exc
        except BaseException:
            thread.shutdown(wait=False)
            raise
        db.row_factory = sqlite3.Row  # read by column name, as asyncpg's records are
        return cls(db, thread, path)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work, self._db)
        except sqlite3.Error as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _UNAVAILABLE:
                raise _unavailable(self._path, exc) from exc
            raise

    async def rollback_if_open(self) -> None:
        def go(db: sqlite3.Connection) -> None:
            if db.in_transaction:
                db.execute("ROLLBACK")

        await self.run(go)

    async def close(self) -> None:
        await self.run(lambda db: db.close())
        self._thread.shutdown(wait=True)


def _unavailable(path: Path, exc: sqlite3.Error) -> JournalUnavailable:
    return JournalUnavailable(str(path), str(exc))


def _private(path: Path) -> None:
    """The journal holds raw deliveries: its directory (when created here) is 0700, its file 0600."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise JournalUnavailable(str(path), f"cannot open: {exc.strerror}") from None
    if path.stat().st_mode & 0o077 and path.stat().st_uid == os.geteuid():
        # Made by an older version, or by hand: SQLite gives the -wal and -shm files the same mode.
        log.warning("journal %s was readable by others; now 0600", path)
        path.chmod(0o600)


class _SqliteTx:
    def __init__(self, conn: _Connection, first: list[Statement]) -> None:
        self._conn = conn
        self._waiting = first
        self.writes = False  # only a write that went through says the journal stores again

    def defer(self, sql: str, *args: object) -> None:
        self.writes = self.writes or not sql.lstrip().upper().startswith(_READING)
        self._waiting.append((sql, args))

    def _with(self, sql: str, args: tuple[object, ...]) -> list[Statement]:
        self.writes = self.writes or not sql.lstrip().upper().startswith(_READING)
        statements, self._waiting = [*self._waiting, (sql, args)], []
        return statements

    async def execute(self, sql: str, *args: object) -> int:
        statements = self._with(sql, args)
        return await self._conn.run(lambda db: _execute_all(db, statements).rowcount)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        statements = self._with(sql, args)
        return await self._conn.run(lambda db: list(_execute_all(db, statements).fetchall()))

    async def fetch_values(self, sql: str, *args: object) -> list[Sequence[Any]]:
        statements = self._with(sql, args)

        def go(db: sqlite3.Connection) -> list[Sequence[Any]]:
            _execute_all(db, statements[:-1])
            return _tuples(db).execute(sql, args).fetchall()

        return await self._conn.run(go)

    async def run(self, work: Callable[[sqlite3.Connection], T], *, writes: bool) -> T:
        """What is deferred, then `work` on the connection, in the same trip to its thread."""
        self.writes = self.writes or writes
        statements, self._waiting = self._waiting, []

        def go(db: sqlite3.Connection) -> T:
            _execute_all(db, statements)
            return work(db)

        return await self._conn.run(go)

    async def flush(self) -> None:
        """Run what is deferred (with `COMMIT` deferred last, the commit and what precedes it: one trip)."""
        statements, self._waiting = self._waiting, []
        if statements:
            await self._conn.run(lambda db: _execute_all(db, statements))


class _Turns:
    """Turns on the one connection (transactions must not interleave on it), first come first served,
    except that a bulk turn waits while any other is queued: a webhook's delivery, a decision's intents, the
    pipeline's reads go ahead of a SIEM batch. A bulk writer keeps its turn short (`others_waiting`)."""

    def __init__(self) -> None:
        self._held = False
        self._first: deque[asyncio.Future[None]] = deque()
        self._bulk: deque[asyncio.Future[None]] = deque()

    def others_waiting(self) -> bool:
        return any(not f.done() for f in self._first)

    @asynccontextmanager
    async def turn(self, *, bulk: bool) -> AsyncIterator[None]:
        await self._take(self._bulk if bulk else self._first)
        try:
            yield
        finally:
            self._pass_on()

    async def _take(self, queue: deque[asyncio.Future[None]]) -> None:
        if not self._held and not self._first and not self._bulk:
            self._held = True
            return
        waiting = asyncio.get_running_loop().create_future()
        queue.append(waiting)
        try:
            await waiting
        except asyncio.CancelledError:
            if waiting.done() and not waiting.cancelled():
                self._pass_on()  # given the turn as it was cancelled: the next one's now
            elif waiting in queue:
                queue.remove(waiting)
            raise

    def _pass_on(self) -> None:
        for queue in (self._first, self._bulk):
            while queue:
                waiting = queue.popleft()
                if not waiting.done():
                    waiting.set_result(None)  # still held: the turn goes straight to the next
                    return
        self._held = False


def _accept_in_one_trip(
    first: list[Statement], rows: list[tuple[object, ...]], owner: str, db: sqlite3.Connection
) -> dict[tuple[str, str], int]:
    """A part of a batch stored in one transaction, in the connection's thread: (dedup key, delivery id)
    -> seq of each event inserted; a duplicate is skipped (and, still pending, taken over)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        _execute_all(db, first)
        stored: dict[tuple[str, str], int] = {}
        for part in [rows[i : i + 400] for i in range(0, len(rows), 400)]:
            stored.update({(str(k), str(d)): int(seq) for seq, k, d in _inserted(db, part)})
        _execute_all(db, takeover_statements(rows, stored, owner))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return stored


def _inserted(db: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> list[Sequence[Any]]:
    """Insert event rows, a duplicate dedup key skipped: (seq, dedup_key, delivery_id) of each inserted.
    Without RETURNING (a fifth of the insert's CPU, and a row object per event): in the transaction nobody
    else writes, and AUTOINCREMENT numbers every row above all there were, so the rows above the highest
    seq before are the ones inserted. When every row went in, their numbers follow it."""
    (before,) = _tuples(db).execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
    cursor = db.execute(EVENT_INSERT.format(values=_rows(len(rows), 9)), [v for r in rows for v in r])
    if cursor.rowcount == len(rows) and cursor.lastrowid == before + len(rows):
        return [(before + n, r[0], r[1]) for n, r in enumerate(rows, 1)]
    query = "SELECT seq, dedup_key, delivery_id FROM events WHERE seq > ? ORDER BY seq"
    return _tuples(db).execute(query, (before,)).fetchall()


def _outcomes_in_one_trip(
    seqs: Sequence[int], writes: Mapping[int, list[Statement]], processed_at: str, db: sqlite3.Connection
) -> list[int]:
    """Processed marks, and what each event marked now decided, in one transaction in the connection's
    thread, in order: the events that were pending (the others were processed already, and write nothing)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        marked = [seq for i in range(0, len(seqs), 400) for seq in _marked(db, seqs[i : i + 400], processed_at)]
        now = set(marked)
        for seq in seqs:
            if seq in now and seq in writes:
                _execute_all(db, writes[seq])
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return marked


def _marked(db: sqlite3.Connection, seqs: Sequence[int], processed_at: str) -> list[int]:
    """Mark pending events processed: those of `seqs` that were pending. Without RETURNING when every
    event was pending (as good as always): the count says so. Otherwise undone and done again with
    RETURNING, to know which."""
    sql = MARK_PROCESSED.format(marks=_marks(len(seqs)))
    args = (processed_at, *seqs)
    db.execute("SAVEPOINT marks")
    if db.execute(sql, args).rowcount == len(seqs):
        db.execute("RELEASE marks")
        return list(seqs)
    db.execute("ROLLBACK TO marks")
    db.execute("RELEASE marks")
    return [int(seq) for (seq,) in _tuples(db).execute(sql + " RETURNING seq", args)]


def _prepare_reader(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA query_only=ON")  # a write here would bypass the turns of the writing connection


def _sqlite(tx: Tx) -> _SqliteTx:
    if not isinstance(tx, _SqliteTx):
        raise TypeError(f"a SQLite journal's transaction, not {type(tx).__name__}")
    return tx


class SqliteJournal(SqlJournal):
    index_hint = " INDEXED BY {}"

    def __init__(self, conn: _Connection, path: Path, reader: _Connection | None = None) -> None:
        self._conn = conn
        # Reads on a connection (and a thread) of their own: in WAL mode they see what is committed, and
        # wait for no write, so the pipeline's look for urgent events never queues behind a SIEM batch.
        self._reader = reader or conn
        self._turns = _Turns()
        self.availability = Availability(str(path))

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> SqliteJournal:
        """Open (creating if needed). `synchronous=FULL` survives power loss; NORMAL survives a process
        crash only, and is faster."""
        if synchronous not in {"FULL", "NORMAL"}:
            raise ValueError("synchronous must be FULL or NORMAL")
        _private(path)
        conn = await _Connection.open(path)
        ddl = SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB")

        def prepare(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(ddl)
            for table, column, kind in ADDED_COLUMNS:
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            for index in ADDED_INDEXES:
                db.execute(index)
            for name in DROPPED_INDEXES:
                db.execute(f"DROP INDEX IF EXISTS {name}")

        try:
            await conn.run(prepare)
        except BaseException:
            await conn.close()
            raise
        try:
            reader = await _Connection.open(path)
            await reader.run(_prepare_reader)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path, reader)

    @asynccontextmanager
    async def transaction(self, *, bulk: bool = False) -> AsyncIterator[Tx]:
        async with self._turns.turn(bulk=bulk):
            tx = _SqliteTx(self._conn, [("BEGIN IMMEDIATE", ())])
            try:
                yield tx
                tx.defer("COMMIT")
                await tx.flush()
            except BaseException as exc:
                if isinstance(exc, JournalUnavailable):
                    self.availability.failed(exc)
                with contextlib.suppress(JournalUnavailable):  # SQLite rolled back already, if it could not write
                    await asyncio.shield(self._conn.rollback_if_open())
                raise
            if tx.writes:
                self.availability.succeeded()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        # Each statement on its own (autocommit), on the reading connection: it sees what was committed
        # before it started, never another task's transaction half done.
        tx = _SqliteTx(self._reader, [])
        yield tx
        await tx.flush()

    def _others_waiting(self) -> bool:
        return self._turns.others_waiting()

    async def accept_batch(
        self, items: Sequence[tuple[DeliveryRecord, Sequence[EventRecord]]], owner: str
    ) -> list[Accepted]:
        """As `SqlJournal.accept_batch`, each part of at most `_PART` events in one transaction made in
        one trip to the connection's thread, BEGIN to COMMIT: the connection is held only while SQLite
        works, never across a turn of a busy event loop, and whoever queued meanwhile (a webhook's
        delivery, the pipeline) goes before the next part. A crash between parts leaves the batch
        unacknowledged: it is delivered again, and its dedup keys make the stored part a no-op."""
        bulk = all(e.lane is Lane.BULK for _, events in items for e in events)
        stored: dict[tuple[str, str], int] = {}
        for part in _parts(items, _PART):
            first, rows = accept_statements(part, owner)
            async with self._turns.turn(bulk=bulk):
                try:
                    inserted = await self._conn.run(partial(_accept_in_one_trip, first, rows, owner))
                except JournalUnavailable as exc:
                    self.availability.failed(exc)
                    raise
            self.availability.succeeded()
            stored.update(inserted)
        return [Accepted(tuple(stored.pop((e.dedup_key, d.id), None) for e in events)) for d, events in items]

    async def _insert_events(self, tx: Tx, rows: Sequence[tuple[object, ...]]) -> list[Sequence[Any]]:
        return await _sqlite(tx).run(lambda db: _inserted(db, rows), writes=True)

    async def record_outcomes(self, outcomes: Sequence[EventOutcome], processed_at: str) -> list[bool]:
        """As `SqlJournal.record_outcomes`, in one trip to the connection's thread, BEGIN to COMMIT: the
        connection is held only while SQLite works, and a cut-off's decision waits for no other trip."""
        bulk = not any(o.decisions or o.intents or o.replaced for o in outcomes)
        seqs = [o.event_seq for o in outcomes]
        writes = {o.event_seq: self._outcome_statements(o) for o in outcomes if o.decisions or o.intents or o.replaced}
        async with self._turns.turn(bulk=bulk):
            try:
                marked = set(await self._conn.run(partial(_outcomes_in_one_trip, seqs, writes, processed_at)))
            except JournalUnavailable as exc:
                self.availability.failed(exc)
                raise
        self.availability.succeeded()
        return [seq in marked for seq in seqs]

    async def _mark_processed(self, tx: Tx, seqs: Sequence[int], processed_at: str) -> list[int]:
        return await _sqlite(tx).run(lambda db: _marked(db, seqs, processed_at), writes=True)

    async def _probe(self) -> None:
        # Rewrites the header page: a real write, of the smallest kind, touching no table.
        async with self.transaction() as tx:
            (row,) = await tx.fetch("PRAGMA user_version")
            await tx.execute(f"PRAGMA user_version = {int(row['user_version'])}")

    async def close(self) -> None:
        try:
            await self._conn.close()
        finally:
            if self._reader is not self._conn:
                await self._reader.close()
