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
running this module: it imports the checks alone, not the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import subprocess
import sys
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


@functools.cache
def _sandbox() -> Sandbox:
    """One child for the process, started on first need."""
    return Sandbox()


def _serve(requests: Connection, answers: Connection, memory_bytes: int) -> None:  # pragma: no cover - the child
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    answers.send("ready")
    while True:
        try:
            request, answer = requests.recv()
        except EOFError:
            return
        try:
            verdict = failed_checks(request, answer, OFF_LOOP_STEPS)
            answers.send((verdict.failed, verdict.skipped))
        except OverBudget as exc:
            answers.send((failed_checks(request, answer, 0).failed, str(exc)))
        except MemoryError:
            answers.send(None)  # the parent runs the cheap checks: here even those may fail to allocate


class Sandbox:
    """One child at a time, one check at a time (costly checks queue instead of adding up)."""

    def __init__(self, timeout_s: float = TIMEOUT_S, memory_bytes: int = MEMORY_BYTES) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self._child: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._answers: Connection | None = None
        self._turn = threading.Lock()  # the pipes carry one check at a time
        # Its own thread waits on the pipe: queued checks must not take the loop's default pool.
        self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierwise-schema-check")

    async def check(self, request: Mapping[str, Any], answer: Reply) -> Verdict:
        trimmed = {k: request[k] for k in _FIELDS if k in request}
        failed, skipped = await asyncio.get_running_loop().run_in_executor(self._waiter, self._check, trimmed, answer)
        return Verdict(failed, skipped)

    def _check(self, request: dict[str, Any], answer: Reply) -> tuple[list[str], str | None]:
        with self._turn:
            try:
                requests, answers = self._pipes()
            except (OSError, EOFError) as exc:
                log.error("answer check skipped: the schema-check process did not start (%s)", exc)
                return failed_checks(request, answer, 0).failed, "the schema-check process did not start"
            result: tuple[list[str], str | None] | None = None
            try:
                requests.send((request, answer))
                answered = answers.poll(self.timeout_s)
                if answered:
                    result = answers.recv()
            except (OSError, EOFError):  # the child died: out of memory where Python could not say so
                answered = True
            if result is not None:
                return result
            why = (
                "the schema check ran out of memory"
                if answered
                else f"the schema check took longer than {self.timeout_s:g} s"
            )
            self._stop()
            log.warning("answer check skipped: %s", why)
            return failed_checks(request, answer, 0).failed, why

    def _pipes(self) -> tuple[Connection, Connection]:
        """The child's two pipes, starting it first if there is none. It runs this module as a
        script (not multiprocessing's spawn, which would re-import the parent's main module)."""
        if self._child is None or self._child.poll() is not None or self._requests is None or self._answers is None:
            self._stop()
            from_parent, to_child = os.pipe()  # (read end, write end)
            from_child, to_parent = os.pipe()
            self._child = subprocess.Popen(
                [sys.executable, "-m", __name__, str(from_parent), str(to_parent), str(self.memory_bytes)],
                pass_fds=(from_parent, to_parent),
                stdin=subprocess.DEVNULL,
            )
            os.close(from_parent)
            os.close(to_parent)
            self._requests = Connection(to_child, readable=False)
            self._answers = Connection(from_child, writable=False)
            # A fresh interpreter takes a second or so: not counted against a check's time limit
            if not self._answers.poll(_START_S) or self._answers.recv() != "ready":
                raise OSError("no word from it")
        return self._requests, self._answers

    def _stop(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait(timeout=5)
        for conn in (self._requests, self._answers):
            if conn is not None:
                conn.close()
        self._child = self._requests = self._answers = None

    def close(self) -> None:
        with self._turn:
            self._stop()


if __name__ == "__main__":  # pragma: no cover - the child
    _serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
        int(sys.argv[3]),
    )
