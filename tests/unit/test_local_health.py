"""The local servers' health probe: a server busy generating (probes time out) is not taken for
dead while it answers requests; a silent or refusing one is (httpx mock transports, no ports)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from gateway.availability import Availability
from gateway.dispatch import Dispatcher
from gateway.local.health import TIMEOUTS_BEFORE_DOWN, probe_once
from gateway.policy.store import PolicyStore
from tests.unit.fakes import FakeClock, ScriptedProvider, completion, policy

LOCAL = """
version: 1
tiers:
  - name: local
    deployments:
      - {name: local-a, model: openai/smollm2, api_base: "http://127.0.0.1:8081/v1",
         price: {input_per_1m: 0, output_per_1m: 0}}
routes: [{name: auto, tier: local}]
"""


def _timing_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("busy generating", request=request)


def _refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


class _Generating(ScriptedProvider):
    """A local server in the middle of a long answer: the request stays in flight until released."""

    def __init__(self) -> None:
        super().__init__({"local-a": [completion()]})
        self.release = asyncio.Event()

    async def complete(self, deployment, api_key, body):  # type: ignore[no-untyped-def]
        await self.release.wait()
        return await super().complete(deployment, api_key, body)


async def _probe(store: PolicyStore, state: Availability, transport: httpx.MockTransport, times: int) -> None:
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(times):
            await probe_once(store, state, client)


async def test_a_server_busy_with_its_first_requests_is_not_taken_for_dead(tmp_path: Path) -> None:
    """Before any request has been answered, probes that time out while one is in flight (llama.cpp
    answers /models only between generations) do not mark the server down."""
    loaded = policy(tmp_path, LOCAL)
    provider = _Generating()
    dispatcher = Dispatcher({"openai_compatible": provider}, lambda _: None, FakeClock())
    state, store = Availability(dispatcher), PolicyStore(loaded)
    body = {"model": "m", "messages": [{"role": "user", "content": "a long story"}]}
    answering = asyncio.create_task(dispatcher.complete(dispatcher.plan(loaded, "local"), body, loaded.policy.dispatch))
    await asyncio.sleep(0)  # the request reaches the server
    assert dispatcher.busy("local-a", 30)
    await _probe(store, state, httpx.MockTransport(_timing_out), TIMEOUTS_BEFORE_DOWN + 2)
    assert state.down == set()
    provider.release.set()
    await answering


@pytest.mark.parametrize(("transport", "probes"), [(_timing_out, TIMEOUTS_BEFORE_DOWN), (_refusing, 1)])
async def test_an_idle_server_that_does_not_answer_is_down(tmp_path: Path, transport, probes: int) -> None:  # type: ignore[no-untyped-def]
    state = Availability(Dispatcher({"openai_compatible": _Generating()}, lambda _: None, FakeClock()))
    store = PolicyStore(policy(tmp_path, LOCAL))
    await _probe(store, state, httpx.MockTransport(transport), probes - 1)
    assert state.down == set()  # not yet: timeouts count only in a row
    await _probe(store, state, httpx.MockTransport(transport), 1)
    assert state.down == {"local-a"}
