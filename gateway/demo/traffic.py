"""``tierwise demo-traffic``: a realistic mix of prompts through a running gateway, so a new
user sees a populated dashboard within a minute, and a summary of what it did."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["SAMPLE_PROMPTS", "DemoSummary", "load_prompts", "run_demo"]

SAMPLE_PROMPTS = [
    "hi!",
    "What is the capital of Australia?",
    "Translate 'where is the train station' into German.",
    "Write a haiku about autumn rain.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "What is 17 * 23?",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Explain the difference between TCP and UDP to a new engineer.",
    "Write a function to find the longest common subsequence of three strings.",
    "Prove that the square root of 2 is irrational.",
    "Design a rate limiter for a multi-region API and discuss its failure modes.",
    "Implement a lock-free single-producer single-consumer ring buffer in C++ and explain the memory ordering.",
    "Which of these is a renewable resource?\nA) coal\nB) wind\nC) oil\nD) natural gas\nAnswer:",
    "Sarah was a much better surgeon than Maria so _ always got the harder cases. Option1: Sarah Option2: Maria",
    "A train travels 120 km in 1.5 hours, then 80 km in 1 hour. What is its average speed?",
    "Give three tips for writing clear commit messages.",
]

_TIERS_UNKNOWN = "-"  # a refused or failed request has no tier


def load_prompts(shared: Path | None) -> list[str]:
    """Prompts from the shared routing data where present, else the bundled samples."""
    prompts = list(SAMPLE_PROMPTS)
    if shared is not None and shared.is_dir():
        for path in sorted(shared.glob("*.jsonl"))[:4]:
            with path.open() as fh:
                for i, line in enumerate(fh):
                    if i >= 60:
                        break
                    prompts.append(str(json.loads(line)["prompt"])[-1500:])
    return prompts


@dataclass
class DemoSummary:
    """What a demo run did: requests by tier and by status, and what the gateway says they cost.

    Spend comes from the gateway's ``/metrics`` before and after the run (streams included, which
    carry no cost header), so it counts any other traffic the gateway served meanwhile; None when
    the metrics could not be read (``spend_note`` says why).
    """

    requests: int = 0
    by_tier: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    spend_usd: float | None = None
    frontier_usd: float | None = None
    spend_note: str = ""
    over_s: float = 0.0  # the requests were started evenly over this long (0: all at once)

    def lines(self) -> list[str]:
        rate = self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out = [
            f"{self.requests} requests in {self.elapsed_s:.1f}s ({rate:.1f}/s)",
            f"  by tier:   {_counts(self.by_tier)}",
            f"  by status: {_counts(self.by_status)}",
        ]
        if self.spend_usd is None or self.frontier_usd is None:
            out.append(f"  spend:     unknown ({self.spend_note})")
        else:
            saved = self.frontier_usd - self.spend_usd
            share = f", {saved / self.frontier_usd:.1%}" if self.frontier_usd > 0 else ""
            out.append(
                f"  spend:     ${self.spend_usd:.6f}; all-frontier would have cost ${self.frontier_usd:.6f}"
                f" (saved ${saved:.6f}{share}, before what measuring quality cost: the dashboard nets it out)"
            )
        if self.over_s < _A_CHART:
            out.append(
                "  over time: sent at once, so the dashboard's charts over time show them in a bar or two "
                "(--over 600 spreads them over 10 minutes)"
            )
        return out


_A_CHART = 600.0  # below this the dashboard's finest buckets (10 s) leave a chart of a few bars


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


async def _spend(client: httpx.AsyncClient, base_url: str) -> tuple[float, float] | str:
    """The gateway's cost and frontier-cost counters (all APIs), or why they could not be read."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        r = await client.get(root + "/metrics")
    except httpx.HTTPError as exc:
        return f"GET /metrics failed: {type(exc).__name__}"
    if r.status_code != 200:
        return f"GET /metrics answered {r.status_code}"
    totals = {"tierwise_cost_usd_total": 0.0, "tierwise_frontier_cost_usd_total": 0.0}
    for line in r.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["tierwise_cost_usd_total"], totals["tierwise_frontier_cost_usd_total"]


async def run_demo(
    base_url: str,
    n: int,
    concurrency: int,
    prompts: list[str],
    seed: int = 0,
    on_done: Callable[[DemoSummary], None] | None = None,
    over_s: float = 0.0,
) -> DemoSummary:
    """Send ``n`` requests (a mix of routes, 30% streamed) with ``concurrency`` in flight, started
    evenly over ``over_s`` seconds (0: as fast as they are answered); ``on_done`` is called after
    each one (a progress bar)."""
    rng = random.Random(seed)
    summary = DemoSummary(over_s=over_s)
    sem = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        model = rng.choices(["auto", "cheap", "best", "tier/mid"], [7, 1, 1, 1])[0]
        body = {"model": model, "messages": [{"role": "user", "content": rng.choice(prompts)}], "max_tokens": 64}
        stream = rng.random() < 0.3
        if over_s > 0:
            await asyncio.sleep(max(0.0, started + i * over_s / n - time.monotonic()))
        async with sem:
            try:
                if stream:
                    async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
                        async for _ in r.aiter_lines():
                            pass
                else:
                    r = await client.post("/chat/completions", json=body)
                tier, status = r.headers.get("x-tierwise-tier", _TIERS_UNKNOWN), str(r.status_code)
            except httpx.HTTPError as exc:
                tier, status = _TIERS_UNKNOWN, type(exc).__name__
        summary.requests += 1
        summary.by_tier[tier] += 1
        summary.by_status[status] += 1
        if on_done is not None:
            on_done(summary)

    started = time.monotonic()
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"), timeout=120, headers={"authorization": "Bearer sk-demo"}
    ) as client:
        before = await _spend(client, base_url)
        await asyncio.gather(*(one(client, i) for i in range(n)))
        summary.elapsed_s = time.monotonic() - started
        after = await _spend(client, base_url)
    if isinstance(before, str) or isinstance(after, str):
        summary.spend_note = before if isinstance(before, str) else str(after)
    else:
        summary.spend_usd, summary.frontier_usd = after[0] - before[0], after[1] - before[1]
    return summary
