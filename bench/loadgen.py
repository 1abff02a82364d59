"""Open-loop load generator (its own process): requests at a fixed rate, latency measured from
the *scheduled* send time so a slow server cannot hide queueing (no coordinated omission).

    python bench/loadgen.py --url URL --model M --rate 50 --seconds 10 [--stream] [--unique]
        [--max-tokens N] [--header NAME:VALUE ...] [--api chat|responses]
Prints one JSON object. Streams also give time to first token (ttft), to the end of the stream
(ttlt) and the span between the first and the last content chunk of each request (span).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import time

import httpx

PROMPT = "Summarise the benefits of unit tests in one sentence."


def request_body(api: str, model: str, content: str, max_tokens: int) -> dict[str, object]:
    """A chat completion, or the same question through OpenAI's Responses API."""
    if api == "responses":
        return {"model": model, "input": content, "max_output_tokens": max_tokens}
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p * len(s) + 0.5) - 1))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    headers = {"authorization": f"Bearer {args.key}", **dict(h.split(":", 1) for h in args.header)}
    lat: list[float] = []
    ttft: list[float] = []
    span: list[float] = []
    chunks: list[int] = []
    errors: collections.Counter[str] = collections.Counter()  # what went wrong, e.g. HTTP 503
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as client:

        async def one(i: int, scheduled: float) -> None:
            content = f"{args.prompt} #{i}" if args.unique else args.prompt
            body = request_body(args.api, args.model, content, args.max_tokens)
            try:
                if args.stream:
                    body["stream"] = True
                    first = last = None
                    n, pending = 0, b""
                    async with client.stream("POST", args.url, json=body) as r:
                        async for chunk in r.aiter_raw():
                            *events, pending = (pending + chunk).split(b"\n\n")
                            got = sum(1 for e in events if b'"content"' in e)
                            if got:
                                n += got
                                last = time.perf_counter()
                                first = first or last
                        ok = r.status_code == 200 and first is not None
                        why = f"HTTP {r.status_code}" if r.status_code != 200 else "no content"
                    if ok:
                        ttft.append((first - scheduled) * 1000)  # type: ignore[operator]
                        span.append((last - first) * 1000)  # type: ignore[operator]
                        chunks.append(n)
                else:
                    r = await client.post(args.url, json=body)
                    ok, why = r.status_code == 200, f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                ok, why = False, type(exc).__name__
            if ok:
                lat.append((time.perf_counter() - scheduled) * 1000)
            else:
                errors[why] += 1

        # warm-up (connections, caches) outside the measurement
        await asyncio.gather(*(one(-1 - i, time.perf_counter()) for i in range(min(20, args.rate))))
        for values in (lat, ttft, span, chunks):
            values.clear()
        errors.clear()
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
    result: dict[str, object] = {
        "requests": n,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "mean_ms": statistics.fmean(lat) if lat else None,
    }
    if args.stream:
        result |= {
            "chunks": args.max_tokens,
            # events with a "content" key as the client saw them: a gateway that merges or drops
            # chunks reads low (a final chunk with an empty delta may add one)
            "content_events_p50": pct([float(c) for c in chunks], 0.5),
            "ttft_p50_ms": pct(ttft, 0.5),
            "ttft_p99_ms": pct(ttft, 0.99),
            "ttlt_p50_ms": result["p50_ms"],
            "ttlt_p99_ms": result["p99_ms"],
            "span_p50_ms": pct(span, 0.5),
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="mock")
    ap.add_argument("--key", default="sk-bench")
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--stream", action="store_true", help="chat only")
    ap.add_argument("--api", choices=("chat", "responses"), default="chat", help="the body --url expects")
    ap.add_argument("--max-tokens", type=int, default=16, help="the mock streams one chunk per token")
    ap.add_argument("--header", action="append", default=[], help="NAME:VALUE, sent with every request")
    ap.add_argument("--unique", action="store_true", help="a different prompt every request (no router cache hits)")
    ap.add_argument("--prompt", default=PROMPT)
    print(json.dumps(asyncio.run(run(ap.parse_args()))))


if __name__ == "__main__":
    main()
