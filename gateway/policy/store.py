"""The live policy: a snapshot swapped atomically on file change or SIGHUP.

A request reads ``store.current`` once and keeps that snapshot, so a reload never changes
the rules under an in-flight request. A new file that does not validate is logged and
ignored; the old policy stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from gateway.policy.loader import LoadedPolicy, PolicyError, load_policy

__all__ = ["PolicyStore"]

log = logging.getLogger("tierwise.policy")


class PolicyStore:
    def __init__(self, loaded: LoadedPolicy) -> None:
        self._current = loaded
        self._listeners: list[Callable[[LoadedPolicy], None]] = []
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedPolicy:
        return self._current

    @property
    def path(self) -> Path:
        return self._current.source

    def on_change(self, listener: Callable[[LoadedPolicy], None]) -> None:
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Load the file again; True if a new policy is now in force."""
        try:
            new = load_policy(self.path)
        except PolicyError as exc:
            self.last_error = str(exc)
            log.error("policy reload rejected; keeping the previous policy:\n%s", exc)
            return False
        self._current = new
        self.last_error = None
        log.info("policy reloaded from %s", self.path)
        for listener in self._listeners:
            listener(new)
        return True

    def _mtime_ns(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    async def watch(self, interval_s: float) -> None:
        """Poll the file's mtime; cheaper and more portable than inotify for one file."""
        seen = self._current.mtime_ns
        while True:
            await asyncio.sleep(interval_s)
            mtime = self._mtime_ns()
            if mtime is not None and mtime != seen:
                seen = mtime
                self.reload()

    def install_sighup(self) -> bool:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (NotImplementedError, RuntimeError, ValueError):
            return False  # not the main thread (tests) or no signals on this platform
        return True
