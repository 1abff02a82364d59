"""Local tier figures on this machine: cold start, time to first token, tokens/s, memory.

python bench/local_model.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from pathlib import Path

import httpx

from gateway.local.supervisor import LocalModelSupervisor, bundled_gguf
from gateway.settings import LocalModelSettings

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences what a hash map is.",
    "List three prime numbers.",
    "Give me a tip for learning to cook.",
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gguf = bundled_gguf()
    assert gguf is not None, "install the [local] extra"
    sup = LocalModelSupervisor(LocalModelSettings(model_path=gguf, port=port))
    cold = sup.start()
    url = sup.base_url + "/chat/completions"
    ttfts, rates = [], []
    try:
        with httpx.Client(timeout=120) as http:
            for i in range(args.runs):
                body = {
                    "model": "x",
                    "stream": True,
                    "max_tokens": args.max_tokens,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                }
                t0 = time.perf_counter()
                first, chunks = None, 0
                with http.stream("POST", url, json=body) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: {") and '"content"' in line:
                            chunks += 1
                            if first is None:
                                first = time.perf_counter() - t0
                total = time.perf_counter() - t0
                ttfts.append(first or total)
                rates.append((chunks - 1) / max(total - (first or 0), 1e-9))
                print(
                    f"run {i + 1}/{args.runs}: ttft {ttfts[-1] * 1000:.0f} ms, {chunks} tokens, {rates[-1]:.1f} tok/s",
                    flush=True,
                )
        mem = rss_mb(sup.pid or 0)
    finally:
        sup.stop()
    result = {
        "model": gguf.name,
        "threads": sup.settings.threads,
        "cold_start_s": round(cold, 2),
        "ttft_ms_median": round(statistics.median(ttfts) * 1000, 1),
        "tokens_per_s_median": round(statistics.median(rates), 1),
        "server_rss_mb": round(mem, 1),
    }
    print(json.dumps(result, indent=2))
    out = Path("bench/out/local_model.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
