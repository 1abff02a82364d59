"""The ledger's write-ahead journal: every row is appended to a file before its response is sent.

One process writes one ``active-*`` file. At each flush the active file is renamed to a
``pending-*`` segment and a new one is opened; a segment is deleted once the database has all its
rows, and stays (it *is* the spool) while the database is away. A process holds an exclusive lock
on each of its files for as long as it lives, so a process that dies (kill -9, OOM) leaves them
unlocked, and whoever runs on the same directory (the next start, a sibling worker) replays
them. ``write()`` reaches the kernel at once, so a crash of the process loses nothing; a crash
of the machine loses at most the last ``fsync`` interval (about a second).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from pathlib import Path

__all__ = ["Journal"]


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._stem = f"{os.getpid()}-{time.time_ns()}"
        self._seq = itertools.count()
        self._dirty = False
        self._held: dict[Path, int] = {}  # this process's pending segments, still locked
        self._lock = threading.Lock()  # rotate runs on the event loop, the rest on the writer thread
        self._fd = self._open()

    def _open(self) -> int:
        path = self.directory / f"active-{self._stem}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._path = path
        return fd

    def append(self, line: bytes) -> None:
        os.write(self._fd, line)
        self._dirty = True

    def rotate(self) -> Path:
        """Turn the active file into a pending segment (returned, still locked) and start a new one."""
        segment = self.directory / f"pending-{self._stem}-{next(self._seq):08d}.jsonl"
        os.rename(self._path, segment)
        with self._lock:
            self._held[segment] = self._fd
        self._fd = self._open()
        self._dirty = False
        return segment

    def done(self, segment: Path) -> None:
        """The database has every row of ``segment``: delete it."""
        segment.unlink(missing_ok=True)
        with self._lock:
            fd = self._held.pop(segment, None)
        if fd is not None:
            os.close(fd)

    def sync(self) -> None:
        """fsync what was appended since the last call (from the writer thread, about once a second)."""
        if self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    def close(self) -> None:
        """Stop journalling: an empty active file is removed; whatever the database did not take
        stays on disk, unlocked, for the next process to replay."""
        if self._path.stat().st_size == 0:
            self._path.unlink()
        os.close(self._fd)
        with self._lock:
            for fd in self._held.values():
                os.close(fd)
            self._held.clear()

    def waiting_bytes(self) -> int:
        """Bytes of journalled rows the database has not taken yet (the active file excluded)."""
        total = 0
        for path in self.directory.glob("*.jsonl"):
            if path != self._path:
                total += _size(path)
        return total

    def segments(self) -> list[Path]:
        """Segments waiting for the database, oldest first: this process's own pending ones, and
        every file a dead process left behind, which this process now takes over (locks)."""
        for path in self.directory.glob("*.jsonl"):
            if path != self._path and path not in self._held and (fd := _adopt(path)) is not None:
                with self._lock:
                    self._held[path] = fd
        with self._lock:
            return sorted(self._held, key=_mtime)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _adopt(path: Path) -> int | None:
    """A locked descriptor on a file nobody else holds (its writer is gone), or None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not path.exists():  # replayed and deleted by its owner while we opened it
        os.close(fd)
        return None
    return fd
