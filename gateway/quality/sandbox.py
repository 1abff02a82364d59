"""Answer checks on the request path: cheap ones on the event loop, costly ones in a process of
their own, with a time and a memory limit.

A schema check's cost is not only its number of steps: one ``enum`` step compares the answer with
every entry and builds an error message holding both, and an ``anyOf`` keeps every branch's
errors. A few hundred kilobytes of schema and answer can so take seconds and gigabytes in a
handful of steps. The gateway's process cannot bound that; a child process can: its address
space is capped (``RLIMIT_AS``), and a check that outlives :data:`TIMEOUT_S` is ended by killing
the child (a new one starts for the next check). Either way the check is skipped, with the reason,
and the loop never waited: the parent only waits for a pipe, in a thread.

A check runs on the loop only while what it reads is small (the schemas in play and the answer,
:data:`INLINE_BYTES` each) and its steps few (:data:`~gateway.quality.schemas.INLINE_STEPS`):
ordinary tool calls and JSON answers, a few ms at most. The child is a fresh interpreter
(``spawn``): it imports the checks alone, not the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import orjson

from gateway.quality.checks import Reply, Verdict, failed_checks, schemas_in_play
from gateway.quality.schemas import INLINE_STEPS, OFF_LOOP_STEPS, OverBudget

__all__ = ["INLINE_BYTES", "MEMORY_BYTES", "TIMEOUT_S", "Sandbox", "check_answer"]

log = logging.getLogger("tierwise.quality")

INLINE_BYTES = 8_192
TIMEOUT_S = 1.0
MEMORY_BYTES = 768 * 2**20  # the child's whole address space: the interpreter and jsonschema take ~150 MB
_START_S = 60.0
_FIELDS = ("response_format", "tools", "max_tokens", "max_completion_tokens")  # all a check reads


async def check_answer(request: Mapping[str, Any], answer: Reply) -> Verdict:
    """The checks the answer fails, bounded in time and memory whatever the client sent."""
    if _small(request, answer):
        try:
            return failed_checks(request, answer, INLINE_STEPS)
        except OverBudget:
            pass
    return await _sandbox().check(request, answer)


def _small(request: Mapping[str, Any], answer: Reply) -> bool:
    schemas = schemas_in_play(request, answer)
    if not schemas:
        return True  # nothing but the cheap checks
    if len(answer.text) + sum(len(args) for _, args in answer.tool_calls) > INLINE_BYTES:
        return False
    return sum(len(orjson.dumps(s)) for s in schemas) <= INLINE_BYTES


_shared: Sandbox | None = None


def _sandbox() -> Sandbox:
    global _shared  # noqa: PLW0603 - one child for the process, started on first need
    if _shared is None:
        _shared = Sandbox()
    return _shared


def _serve(conn: Connection, memory_bytes: int) -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    conn.send("ready")
    while True:
        try:
            request, answer = conn.recv()
        except EOFError:
            return
        try:
            verdict = failed_checks(request, answer, OFF_LOOP_STEPS)
            conn.send((verdict.failed, verdict.skipped))
        except OverBudget as exc:
            conn.send((failed_checks(request, answer, 0).failed, str(exc)))
        except MemoryError:
            conn.send(None)  # the parent runs the cheap checks: here even those may fail to allocate


class Sandbox:
    """One child at a time, one check at a time (costly checks queue instead of adding up)."""

    def __init__(self, timeout_s: float = TIMEOUT_S, memory_bytes: int = MEMORY_BYTES) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self._ctx = multiprocessing.get_context("spawn")
        self._child: Any = None
        self._conn: Connection | None = None
        self._turn = threading.Lock()  # the pipe carries one check at a time
        # Its own thread waits on the pipe: queued checks must not take the loop's default pool.
        self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierwise-schema-check")

    async def check(self, request: Mapping[str, Any], answer: Reply) -> Verdict:
        trimmed = {k: request[k] for k in _FIELDS if k in request}
        failed, skipped = await asyncio.get_running_loop().run_in_executor(self._waiter, self._check, trimmed, answer)
        return Verdict(failed, skipped)

    def _check(self, request: dict[str, Any], answer: Reply) -> tuple[list[str], str | None]:
        with self._turn:
            try:
                conn = self._connection()
            except OSError as exc:
                log.error("answer check skipped: %s", exc)
                return failed_checks(request, answer, 0).failed, str(exc)
            try:
                conn.send((request, answer))
                answered = conn.poll(self.timeout_s)
            except OSError:  # the child went away between checks
                answered = False
            if answered:
                try:
                    result: tuple[list[str], str | None] | None = conn.recv()
                except EOFError:  # the child died (out of memory where Python could not say so)
                    result = None
                if result is not None:
                    return result
                why = "the schema check ran out of memory"
            else:
                why = f"the schema check took longer than {self.timeout_s:g} s"
            self._stop()
            log.warning("answer check skipped: %s", why)
            return failed_checks(request, answer, 0).failed, why

    def _connection(self) -> Connection:
        if self._conn is None or self._child is None or not self._child.is_alive():
            self._stop()
            parent, child = self._ctx.Pipe()
            self._child = self._ctx.Process(
                target=_serve, args=(child, self.memory_bytes), name="tierwise-schema-check", daemon=True
            )
            self._child.start()
            child.close()
            self._conn = parent
            # A fresh interpreter takes a second or so: not counted against a check's time limit
            if not parent.poll(_START_S) or parent.recv() != "ready":
                self._stop()
                raise OSError("the schema-check process did not start")
        return self._conn

    def _stop(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._child = self._conn = None

    def close(self) -> None:
        with self._turn:
            self._stop()
