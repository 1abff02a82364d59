"""Ledger writes that lose nothing, off the request path.

``record(row)`` appends the row to the journal (a ``write()``, before the response is sent) and
queues it. A background task moves the queue into the database in batches, on one writer thread
(one connection, rows in order), each batch with its rollup sums staged beside it; every few
seconds the staged sums are merged into the rollups (see ``rollups.merge``). When the database
falls behind (a saturated process leaves its writer thread little time), the queue stops at
``max_queued`` rows and the segment that overflowed is written from its journal file instead, so
memory stays bounded whatever the load.
A batch the database refuses stays in its journal segment and is replayed, oldest first, once
the database answers again; so are the segments a crashed process left behind. ``close()``
writes everything before the process exits.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.ledger import rollups
from gateway.ledger.journal import Journal
from gateway.ledger.models import LedgerEntry, LedgerRow
from gateway.ledger.retention import prune

__all__ = ["LedgerWriter"]

log = logging.getLogger("tierwise.ledger")
_TABLE = LedgerEntry.__table__  # type: ignore[attr-defined]
_FIELDS = LedgerRow.__slots__


class LedgerWriter:
    def __init__(
        self,
        engine: Engine,
        spool_dir: Path,
        batch_size: int = 2_000,
        interval_s: float = 0.2,
        sync_interval_s: float = 1.0,
        retry_interval_s: float = 2.0,
        max_queued: int = 10_000,
        retention_days: float | None = None,
        merge_interval_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.journal = Journal(spool_dir)
        self.batch_size = batch_size
        self.max_queued = max_queued
        self.interval_s = interval_s
        self.sync_interval_s = sync_interval_s
        self.retry_interval_s = retry_interval_s
        self._queue: deque[LedgerRow] = deque()
        self._overflowed = 0  # rows of the active segment that are only in the journal
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.spooled = 0  # rows waiting in journal segments for the database
        self.degraded: str | None = None  # why rows are waiting, if they are
        # One writer thread: the database connection stays on one thread, writes stay in order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self._last_replay = float("-inf")
        self._last_sync = time.monotonic()
        self._busy_since: float | None = None  # when the writer thread's current database call began
        self.retention_days = retention_days  # raw rows older than this are deleted, hourly
        self._last_prune = float("-inf")
        self._last_days = float("-inf")
        self.merge_interval_s = merge_interval_s  # staged rollup sums are merged this often
        self._last_merge = float("-inf")
        self._staged: dict[int, rollups.Staged] = {}  # this writer's batches not merged yet, by id

    def record(self, row: LedgerRow) -> None:
        self.journal.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        if len(self._queue) >= self.max_queued:
            self._overflowed += 1
        else:
            self._queue.append(row)
        if len(self._queue) >= self.batch_size:
            self._wakeup.set()

    @property
    def queued(self) -> int:
        """Rows not in the database yet, in memory or only in the active journal file."""
        return len(self._queue) + self._overflowed

    def status(self, stuck_after_s: float = 5.0) -> str | None:
        """Why the ledger is not keeping up, if it is not (for /readyz)."""
        busy = self._busy_since
        if busy is not None and time.monotonic() - busy > stuck_after_s:
            return f"ledger database has not answered for {time.monotonic() - busy:.0f}s; rows wait in the journal"
        return self.degraded

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued now; replay waiting segments (at start, then every few seconds
        while the database is away); fsync the journal about once a second."""
        loop = asyncio.get_running_loop()
        if self._queue or self._overflowed:
            segment = self.journal.rotate()
            rows, overflowed = list(self._queue), self._overflowed
            self._queue.clear()
            self._overflowed = 0
            if overflowed:  # the segment holds rows the queue did not: write it from the file
                if not await loop.run_in_executor(self._thread, self._replay_segment, segment, False):
                    self.spooled += len(rows) + overflowed
            else:
                await loop.run_in_executor(self._thread, self._commit, segment, rows)
        now = time.monotonic()
        # Waiting rows are retried every few seconds; otherwise look once a minute for files a
        # crashed sibling (another worker on this directory) left behind.
        waiting = self.spooled > 0 or self.degraded is not None
        if now - self._last_replay > (self.retry_interval_s if waiting else 60.0):
            self._last_replay = now
            await loop.run_in_executor(self._thread, self._replay)
        if now - self._last_sync > self.sync_interval_s:
            self._last_sync = now
            await loop.run_in_executor(self._thread, self.journal.sync)
        if now - self._last_merge >= self.merge_interval_s and not self.degraded:
            self._last_merge = now
            await self.merge()
        if now - self._last_days > 600 and not self.degraded:
            self._last_days = now
            await self.close_days(datetime.now(UTC))
        if self.retention_days is not None and now - self._last_prune > 3600 and not self.degraded:
            self._last_prune = now
            await self.prune(datetime.now(UTC))

    async def merge(self) -> None:
        """Add the batches staged since the last merge (by any replica) to the rollups."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._merge)
        except SQLAlchemyError as exc:
            log.error("ledger could not merge the staged rollups (%s); tried again later", type(exc).__name__)

    def _merge(self) -> None:
        while True:
            with self.engine.begin() as conn:
                merged = rollups.merge(conn, _MERGED_AT_ONCE, self._staged)
            if len(merged) < _MERGED_AT_ONCE:  # all there was: ours too, if another replica took them
                self._staged.clear()
                return
            last = max(merged)
            for at in [at for at in self._staged if at <= last]:
                del self._staged[at]

    async def close_days(self, now: datetime) -> None:
        """Add up the days that ended into the daily rollups (a read of the mark, most times)."""

        def close() -> None:
            with self.engine.begin() as conn:
                rollups.close_days(conn, now)

        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, close)
        except SQLAlchemyError as exc:
            log.error("ledger could not add up the last day's rollups (%s); tried again later", type(exc).__name__)

    async def prune(self, now: datetime) -> int:
        """Delete the rows retention no longer keeps (on the writer thread, between batches)."""
        assert self.retention_days is not None
        before = now - timedelta(days=self.retention_days)
        try:
            deleted = await asyncio.get_running_loop().run_in_executor(self._thread, prune, self.engine, before)
        except SQLAlchemyError as exc:
            log.error("ledger retention could not delete old rows (%s); tried again in an hour", type(exc).__name__)
            return 0
        if deleted:
            log.info("ledger retention: deleted %d rows from before %s", deleted, before.isoformat(timespec="seconds"))
        return deleted

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._replay)
        if not self.degraded:
            await self.merge()
        self.journal.sync()
        self.journal.close()
        self._thread.shutdown(wait=True)

    # -- writer-thread side ---------------------------------------------------------------
    def _insert(self, rows: list[dict[str, Any]]) -> None:
        self._busy_since = time.monotonic()
        try:
            self._insert_batches(rows)
        finally:
            self._busy_since = None

    def _insert_batches(self, rows: list[dict[str, Any]]) -> None:
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i : i + self.batch_size]
            try:
                with self.engine.begin() as conn:
                    staged = _write(conn, chunk)
            except IntegrityError:  # a replayed row already written: skip only that one
                for row in chunk:
                    try:
                        with self.engine.begin() as conn:
                            self._keep(_write(conn, [row]))
                    except IntegrityError:
                        log.info("ledger row %s was already written; skipped", row.get("request_id"))
            else:
                self._keep(staged)

    def _keep(self, staged: tuple[int, rollups.Staged] | None) -> None:
        """Keep a committed batch's rollup sums for the merge (a bounded number: the merge reads
        the rest back)."""
        if staged is not None:
            self._staged[staged[0]] = staged[1]
            if len(self._staged) > _MERGED_AT_ONCE:
                del self._staged[next(iter(self._staged))]

    def _commit(self, segment: Path, rows: list[LedgerRow]) -> None:
        try:
            self._insert([_columns(row) for row in rows])
        except (SQLAlchemyError, OSError) as exc:
            self._waiting(exc, len(rows))
            return  # the segment stays, locked by us, and is replayed later
        self.journal.done(segment)
        self.written += len(rows)
        if self.degraded and not self.spooled:
            log.warning("ledger database is back; writes resumed")
            self.degraded = None

    def _replay(self) -> None:
        for segment in self.journal.segments():
            if not self._replay_segment(segment):
                return
        if self.degraded and not self.journal.segments():
            log.warning("ledger database is back; every waiting row is written")
            self.degraded = None
            self.spooled = 0

    def _replay_segment(self, segment: Path, announce: bool = True) -> bool:
        """Write one journal segment from its file, a batch at a time (a segment that overflowed
        the queue may hold many); False if the database refused it."""
        written = 0
        try:
            with segment.open("rb") as lines:
                while batch := list(itertools.islice(lines, self.batch_size)):
                    rows = []
                    for line in batch:
                        try:
                            rows.append(_restore(orjson.loads(line)))
                        except (orjson.JSONDecodeError, TypeError):  # a line torn by a machine crash
                            log.error("skipped an unreadable ledger journal line in %s", segment.name)
                    self._insert(rows)  # a replay from the start skips rows already written
                    written += len(rows)
        except FileNotFoundError:
            self.journal.done(segment)
            return True
        except (SQLAlchemyError, OSError) as exc:
            self._waiting(exc, 0)
            return False
        self.journal.done(segment)
        self.written += written
        self.spooled = max(0, self.spooled - written)
        if written and announce:
            log.warning("replayed %d ledger rows from %s", written, segment.name)
        return True

    def _waiting(self, exc: BaseException, rows: int) -> None:
        if not self.degraded:
            log.error("ledger database unavailable (%s); rows wait in %s", type(exc).__name__, self.journal.directory)
        self.degraded = f"ledger database unavailable ({type(exc).__name__}); rows wait in {self.journal.directory}"
        self.spooled += rows


def _write(conn: Connection, rows: list[dict[str, Any]]) -> tuple[int, rollups.Staged] | None:
    """Insert ``rows`` and stage their rollup sums, in one transaction."""
    _insert_rows(conn, rows)
    return rollups.stage(conn, rows)


_MERGED_AT_ONCE = 1_000  # staged batches a merge's transaction takes (a backlog merges in several)


def _insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if conn.dialect.name != "sqlite":
        conn.execute(insert(_TABLE), rows)
        return
    # Multi-row VALUES, not executemany: pysqlite gives up the GIL around each row's step, and
    # each time it waits for the event loop's thread to hand it back (up to the 5 ms switch
    # interval). With that thread busy, executemany wrote ~300 rows/s (3.5 ms of wall time and
    # 50 µs of CPU a row); one statement per power-of-two run of rows writes a row in 0.04 ms
    # wall and 10 µs of CPU.
    binds = _sqlite_binds(conn.dialect)
    width = len(binds)
    values = tuple(bind(row[name]) if bind else row[name] for row in rows for name, bind in binds)
    done = 0
    while done < len(rows):
        run = 1 << (min(len(rows) - done, _MAX_RUN).bit_length() - 1)  # the largest power of two that fits
        conn.exec_driver_sql(_values_sql(run), values[done * width : (done + run) * width])
        done += run


_MAX_RUN = 512  # rows per statement: 512 x 35 columns stays under SQLite's 32,766 parameters


@functools.cache
def _values_sql(rows: int) -> str:
    one = "(" + ", ".join("?" * len(_FIELDS)) + ")"
    return f"INSERT INTO {_TABLE.name} ({', '.join(_FIELDS)}) VALUES " + ", ".join([one] * rows)


@functools.cache
def _sqlite_binds(dialect: Dialect) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    """Each column's name and SQLAlchemy's conversion of its value for the driver (dates, booleans)."""
    return tuple((name, _TABLE.c[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in _FIELDS)


def _columns(row: LedgerRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _FIELDS}


def _restore(line: dict[str, Any]) -> dict[str, Any]:
    """A journal line's row, whole: fields the line lacks (written by an older version) take
    their defaults, as every row of a multi-row insert names every column."""
    row = LedgerRow(**{k: v for k, v in line.items() if k in _FIELDS})
    if isinstance(row.created_at, str):
        row.created_at = datetime.fromisoformat(row.created_at)
    return _columns(row)
