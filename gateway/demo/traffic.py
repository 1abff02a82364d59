"""``tierwise demo-traffic``: a realistic mix of prompts through a running gateway, so a new
user sees a populated dashboard within a minute."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

import httpx

__all__ = ["SAMPLE_PROMPTS", "load_prompts", "run_demo"]

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


async def run_demo(base_url: str, n: int, concurrency: int, prompts: list[str], seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)
    done = 0
    started = time.monotonic()

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal done
        model = rng.choices(["auto", "cheap", "best", "tier/mid"], [7, 1, 1, 1])[0]
        body = {"model": model, "messages": [{"role": "user", "content": rng.choice(prompts)}], "max_tokens": 64}
        stream = rng.random() < 0.3
        async with sem:
            try:
                if stream:
                    async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
                        async for _ in r.aiter_lines():
                            pass
                        key = r.headers.get("x-tierwise-tier", str(r.status_code))
                else:
                    r = await client.post("/chat/completions", json=body)
                    key = r.headers.get("x-tierwise-tier", str(r.status_code))
            except httpx.HTTPError as exc:
                key = type(exc).__name__
        counts[key] = counts.get(key, 0) + 1
        done += 1
        if done % max(1, n // 10) == 0 or done == n:
            print(f"  {done}/{n} requests in {time.monotonic() - started:.1f}s: {counts}", file=sys.stderr, flush=True)

    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"), timeout=120, headers={"authorization": "Bearer sk-demo"}
    ) as client:
        await asyncio.gather(*(one(client) for _ in range(n)))
    return counts
