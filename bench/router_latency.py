"""Router decision latency on this machine, by prompt length, single request, one thread.

    python bench/router_latency.py [--repeats 200]

Prints p50/p99 per length bucket for each available encoder (cold: a new prompt every time;
cached: a repeated prompt served from the embedding cache) and writes bench/out/router_latency.json.
The quality of each encoder comes from `tierwise router eval` on RouterBench dev (see the issue notes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from router import Router, default_artifact_dir

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "engineers",
    "argue",
    "about",
    "caching",
    "strategies",
]


def prompt(tokens: int, salt: int) -> str:
    words = [WORDS[(i * 7 + salt) % len(WORDS)] for i in range(max(1, int(tokens * 0.75)))]
    return f"[{salt}] " + " ".join(words) + " ?"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)  # one thread: the gateway decides on a worker thread, beside other requests
    results = []
    for name in ("default", "minilm"):
        router = Router.load(default_artifact_dir().parent / name)
        router.warm()
        print(
            f"\nartifact {name}: encoder {router.artifact.encoder} ({router.version}), torch threads {torch.get_num_threads()}"
        )
        print(f"{'tokens':>7}{'cold p50 ms':>13}{'cold p99 ms':>13}{'cached p50 ms':>15}")
        results += measure(router, name, args.repeats)
    out = Path(__file__).resolve().parent / "out" / "router_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def measure(router: Router, name: str, repeats: int) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    for tokens in (5, 50, 250, 1000, 2000):
        cold = []
        for i in range(repeats if tokens <= 250 else repeats // 4):
            text = prompt(tokens, i)
            t0 = time.perf_counter()
            router.decide(text)
            cold.append((time.perf_counter() - t0) * 1000)
        warm_text = prompt(tokens, 10**6)
        router.decide(warm_text)
        cached = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            router.decide(warm_text)
            cached.append((time.perf_counter() - t0) * 1000)
        row = {
            "artifact": name,
            "tokens": tokens,
            "cold_p50_ms": pct(cold, 0.5),
            "cold_p99_ms": pct(cold, 0.99),
            "cached_p50_ms": statistics.median(cached),
        }
        results.append(row)
        print(
            f"{tokens:>7}{row['cold_p50_ms']:>13.2f}{row['cold_p99_ms']:>13.2f}{row['cached_p50_ms']:>15.3f}",
            flush=True,
        )
    return results


if __name__ == "__main__":
    main()
