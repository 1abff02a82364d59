"""Batched, off-request-path ledger writes that lose nothing.

Handlers call ``record(row)``, which only appends to an in-memory queue. A background task
inserts batches in a worker thread. If the database refuses a batch, the rows go to an
append-only spool file (one JSON object a line, fsynced) and are replayed, oldest first,
once the database answers again. ``close()`` drains everything before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.ledger.models import LedgerEntry, LedgerRow

__all__ = ["LedgerWriter"]

log = logging.getLogger("tierwise.ledger")
_TABLE = LedgerEntry.__table__  # type: ignore[attr-defined]
_FIELDS = LedgerRow.__slots__


class LedgerWriter:
    def __init__(self, engine: Engine, spool_path: Path, batch_size: int = 500, interval_s: float = 0.2) -> None:
        self.engine = engine
        self.spool_path = spool_path
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._queue: deque[LedgerRow] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.spooled = 0
        self.degraded: str | None = None  # why writes are going to the spool, if they are
        self.retry_interval_s = 2.0
        # One writer thread: the database connection stays on one thread, writes stay in order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self._last_replay_try = 0.0

    def record(self, row: LedgerRow) -> None:
        self._queue.append(row)
        if len(self._queue) >= self.batch_size:
            self._wakeup.set()

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
        """Write everything queued now (and replay the spool if the database is back)."""
        while self._queue:
            batch = [_as_dict(self._queue.popleft()) for _ in range(min(self.batch_size, len(self._queue)))]
            await asyncio.get_running_loop().run_in_executor(self._thread, self._write_or_spool, batch)
        replaying = self.spool_path.with_suffix(self.spool_path.suffix + ".replaying")
        has_spool = replaying.exists() or (self.spool_path.exists() and self.spool_path.stat().st_size > 0)
        # While degraded with nothing new to write, probe the database every few seconds.
        if has_spool and (not self.degraded or time.monotonic() - self._last_replay_try > self.retry_interval_s):
            self._last_replay_try = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(self._thread, self._replay)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()
        self._thread.shutdown(wait=True)

    # -- worker-thread side ---------------------------------------------------------------
    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(_TABLE), rows)

    def _write_or_spool(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._insert(rows)
        except IntegrityError:
            self._insert_one_by_one(rows)  # a replayed row already written: skip only that one
        except (SQLAlchemyError, OSError) as exc:
            self._spool(rows, exc)
            return
        self.written += len(rows)
        if self.degraded:
            log.warning("ledger database is back; writes resumed")
        self.degraded = None

    def _insert_one_by_one(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                self._insert([row])
            except IntegrityError:
                log.info("ledger row %s was already written; skipped", row.get("request_id"))

    def _spool(self, rows: list[dict[str, Any]], exc: BaseException) -> None:
        if not self.degraded:
            log.error("ledger database unavailable (%s); spooling rows to %s", type(exc).__name__, self.spool_path)
        self.degraded = f"ledger database unavailable ({type(exc).__name__}); spooling to {self.spool_path}"
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spool_path.open("ab") as fh:
            for row in rows:
                fh.write(orjson.dumps(row, default=_default) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.spooled += len(rows)
        self._last_replay_try = time.monotonic()

    def _replay(self) -> None:
        # Rename first so rows spooled meanwhile land in a fresh file and nothing is read twice.
        replaying = self.spool_path.with_suffix(self.spool_path.suffix + ".replaying")
        if not replaying.exists():
            os.replace(self.spool_path, replaying)
        elif self.spool_path.exists():
            # An earlier replay was interrupted: fold newer spooled rows in behind it.
            with replaying.open("ab") as out:
                out.write(self.spool_path.read_bytes())
            self.spool_path.unlink()
        rows = [_restore(orjson.loads(line)) for line in replaying.read_bytes().splitlines() if line.strip()]
        try:
            for i in range(0, len(rows), self.batch_size):
                chunk = rows[i : i + self.batch_size]
                try:
                    self._insert(chunk)
                except IntegrityError:
                    self._insert_one_by_one(chunk)
        except (SQLAlchemyError, OSError) as exc:
            self.degraded = f"ledger database unavailable ({type(exc).__name__}); spooling to {self.spool_path}"
            return  # keep the .replaying file; the next flush tries again
        replaying.unlink()
        self.written += len(rows)
        self.degraded = None
        log.warning("replayed %d spooled ledger rows", len(rows))


def _as_dict(row: LedgerRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _FIELDS}


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _restore(row: dict[str, Any]) -> dict[str, Any]:
    created = row.get("created_at")
    if isinstance(created, str):
        row["created_at"] = datetime.fromisoformat(created)
    return row
