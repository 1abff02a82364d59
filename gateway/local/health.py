"""Which local upstreams are up: probe loopback OpenAI-compatible servers at start and
every few seconds, so a local model that is down is skipped (and used again once it is up)."""

from __future__ import annotations

import asyncio
import logging

import httpx

from gateway.availability import Availability
from gateway.net import is_loopback_url
from gateway.policy.models import Deployment, Policy
from gateway.policy.store import PolicyStore

__all__ = ["probe_once", "watch_local_servers"]

log = logging.getLogger("tierwise.health")


def _local(policy: Policy) -> list[Deployment]:
    return [
        d
        for t in policy.tiers
        for d in t.deployments
        if d.provider == "openai_compatible" and is_loopback_url(d.api_base)
    ]


# A probe that times out is a busy server as often as a dead one: llama.cpp's server answers
# /models only between generations, so on a loaded machine one slow probe would send local
# traffic to a paid tier. Refused connections and errors count at once; timeouts only in a row,
# and not while the server is answering real requests.
TIMEOUTS_BEFORE_DOWN = 3
BUSY_WINDOW_S = 30.0


async def probe_once(policy: PolicyStore, state: Availability, client: httpx.AsyncClient) -> None:
    for dep in _local(policy.current.policy):
        assert dep.api_base is not None
        try:
            up = (await client.get(dep.api_base.rstrip("/") + "/models", timeout=2.0)).status_code < 500
            state.probe_timeouts.pop(dep.name, None)
        except httpx.TimeoutException:
            state.probe_timeouts[dep.name] = misses = state.probe_timeouts.get(dep.name, 0) + 1
            busy = state.dispatcher.busy(dep.name, BUSY_WINDOW_S)
            # not evidence either way until it repeats: keep the current state
            up = dep.name not in state.down and (busy or misses < TIMEOUTS_BEFORE_DOWN)
        except httpx.HTTPError:
            up = False
        if up and dep.name in state.down:
            state.down.discard(dep.name)
            log.warning("local deployment %s is answering again at %s", dep.name, dep.api_base)
        elif not up and dep.name not in state.down:
            state.down.add(dep.name)
            log.warning("local deployment %s is not answering at %s; routing skips it", dep.name, dep.api_base)


async def watch_local_servers(policy: PolicyStore, state: Availability, interval_s: float = 5.0) -> None:
    async with httpx.AsyncClient() as client:
        while True:
            await asyncio.sleep(interval_s)
            await probe_once(policy, state, client)
