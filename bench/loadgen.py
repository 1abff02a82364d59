"""Open-loop load generator (its own process): requests at a fixed rate, latency measured from
the *scheduled* send time so a slow server cannot hide queueing (no coordinated omission).

    python bench/loadgen.py --url URL --model M --rate 50 --seconds 10 [--stream] [--unique]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p * len(s) + 0.5) - 1))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    headers = {"authorization": f"Bearer {args.key}"}
    lat: list[float] = []
    ttft: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as client:

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            content = f"{args.prompt} #{i}" if args.unique else args.prompt
            body = {"model": args.model, "messages": [{"role": "user", "content": content}], "max_tokens": 16}
            try:
                if args.stream:
                    body["stream"] = True
                    first = None
                    async with client.stream("POST", args.url, json=body) as r:
                        async for chunk in r.aiter_raw():
                            if first is None and b"content" in chunk:
                                first = time.perf_counter()
                        ok = r.status_code == 200
                    if first is not None:
                        ttft.append((first - scheduled) * 1000)
                else:
                    r = await client.post(args.url, json=body)
                    ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                lat.append((time.perf_counter() - scheduled) * 1000)
            else:
                errors += 1

        # warm-up (connections, caches) outside the measurement
        await asyncio.gather(*(one(-1 - i, time.perf_counter()) for i in range(min(20, args.rate))))
        lat.clear()
        ttft.clear()
        errors = 0
        start = time.perf_counter() + 0.05
        n = int(args.rate * args.seconds)
        tasks = []
        for i in range(n):
            at = start + i / args.rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at)))
        await asyncio.gather(*tasks)
    return {
        "requests": n,
        "errors": errors,
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "mean_ms": statistics.fmean(lat) if lat else None,
        "ttft_p50_ms": pct(ttft, 0.5),
        "ttft_p99_ms": pct(ttft, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="mock")
    ap.add_argument("--key", default="sk-bench")
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--unique", action="store_true", help="a different prompt every request (no router cache hits)")
    ap.add_argument("--prompt", default="Summarise the benefits of unit tests in one sentence.")
    print(json.dumps(asyncio.run(run(ap.parse_args()))))


if __name__ == "__main__":
    main()
