"""Stand-ins for the unit layer: a clock moved by hand, a scripted provider, an in-memory ledger."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import UpstreamError
from gateway.ledger.models import LedgerRow
from gateway.policy.loader import LoadedPolicy, load_policy
from gateway.policy.models import Deployment
from gateway.providers.base import Completion, Provider, UpstreamStream
from gateway.usage import Usage


class FakeClock:
    """``sleep`` advances time instead of waiting; ``now`` starts at a minute boundary."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self._now = now
        self._mono = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def completion(text: str = "ok", prompt: int = 10, out: int = 5) -> Completion:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    return Completion(orjson.dumps(body), Usage(prompt, out), body)


Outcome = Completion | UpstreamError | Exception | list[bytes]


class ScriptedProvider(Provider):
    """Each deployment answers from its script, in order (the last entry repeats). A ``list[bytes]``
    is a stream of SSE events; an exception is raised as the upstream's failure."""

    def __init__(self, scripts: dict[str, list[Outcome]]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _next(self, deployment: Deployment, body: dict[str, Any]) -> Outcome:
        self.calls.append((deployment.name, body))
        script = self.scripts[deployment.name]
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def complete(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion:
        outcome = self._next(deployment, body)
        assert isinstance(outcome, Completion)
        return outcome

    async def embed(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion:
        return await self.complete(deployment, api_key, body)

    async def open_stream(
        self, deployment: Deployment, api_key: str | None, body: dict[str, Any], include_usage: bool
    ) -> UpstreamStream:
        events = self._next(deployment, body)
        assert isinstance(events, list)
        stream = UpstreamStream(events=_nothing())
        stream.events = _replay(events, stream)
        return stream


async def _replay(events: Iterable[bytes], stream: UpstreamStream) -> AsyncIterator[bytes]:
    for event in events:
        data = event.strip().removeprefix(b"data:").strip()
        if data == b"[DONE]":
            stream.done = True
        elif data.startswith(b"{"):
            stream.observe(orjson.loads(data))  # as a real provider reports each chunk
        yield event


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


class RecordingLedger:
    def __init__(self) -> None:
        self.rows: list[LedgerRow] = []

    def record(self, row: LedgerRow) -> None:
        self.rows.append(row)


def policy(tmp_path: Path, yaml_text: str) -> LoadedPolicy:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(yaml_text))
    return load_policy(path)


THREE_TIERS = """
version: 1
tiers:
  - name: local
    deployments:
      - {name: local-a, model: openai/a, api_base: "http://local.invalid/v1", max_retries: 0,
         price: {input_per_1m: 0, output_per_1m: 0}}
  - name: mid
    deployments:
      - {name: mid-a, model: openai/b, api_base: "http://mid.invalid/v1", max_retries: 1,
         price: {input_per_1m: 1, output_per_1m: 2}}
      - {name: mid-b, model: openai/c, api_base: "http://mid.invalid/v1", max_retries: 0,
         price: {input_per_1m: 1, output_per_1m: 2}}
  - name: frontier
    deployments:
      - {name: top-a, model: openai/d, api_base: "http://top.invalid/v1", max_retries: 0,
         price: {input_per_1m: 10, output_per_1m: 30}}
routes:
  - {name: cheap, tier: local}
  - {name: m, tier: mid}
dispatch: {backoff_base_s: 0.1, backoff_max_s: 1, cooldown_s: 30, max_retry_after_s: 5, failures_before_cooldown: 2}
"""
