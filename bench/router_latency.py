"""Router decision latency on this machine, by prompt length, single request, one thread;
then the memory and start time of a gateway serving each artifact.

    python bench/router_latency.py [--repeats 200] [--artifacts fast default minilm] [--no-gateway]

Per artifact: p50/p99 of ``Router.decide`` with a new prompt every time (cold) and with a
repeated one (cached) at 5-2000 tokens; for a two-stage router, the share of those prompts the
second stage decided, and the same figures on real prompts (Arena-Hard, RouterBench dev, the
conversational check) where the shared data is present. Then a gateway (`policies/fake.yaml`
with that artifact) is started as its own process: seconds until /healthz answers, and its RSS
after 50 ``auto`` requests with new prompts. Writes bench/out/router_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from router import Router  # noqa: E402
from router.artifact import resolve_artifact  # noqa: E402
from router.data import read_rows  # noqa: E402

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
LENGTHS = (5, 50, 250, 1000, 2000)
SHARED = REPO.parent / "shared" / "data" / "routing"


def prompt(tokens: int, salt: int) -> str:
    words = [WORDS[(i * 7 + salt) % len(WORDS)] for i in range(max(1, int(tokens * 0.75)))]
    return f"[{salt}] " + " ".join(words) + " ?"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def real_prompts() -> list[str]:
    texts = [json.loads(line)["prompt"] for line in (REPO / "router" / "checks" / "conversational.jsonl").open()]
    if SHARED.is_dir():
        texts += [r.prompt for r in read_rows([SHARED / "arena_hard_train.jsonl"])]
        texts += [r.prompt for r in read_rows([SHARED / "routerbench_dev.jsonl"])][:150]
    return texts


def timed(router: Router, texts: list[str]) -> tuple[list[float], float]:
    """Milliseconds per decision and the share the second stage decided."""
    times, second = [], 0
    for text in texts:
        t0 = time.perf_counter()
        d = router.decide(text)
        times.append((time.perf_counter() - t0) * 1000)
        second += d.stage == 2 and router.first_stage is not None
    return times, second / len(texts)


def measure(router: Router, name: str, repeats: int) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    print(f"{'tokens':>7}{'cold p50 ms':>13}{'cold p99 ms':>13}{'cached p50 ms':>15}{'stage 2':>9}")
    for tokens in LENGTHS:
        cold, second = timed(router, [prompt(tokens, i) for i in range(repeats if tokens <= 250 else repeats // 4)])
        warm_text = prompt(tokens, 10**6)
        router.decide(warm_text)
        cached, _ = timed(router, [warm_text] * repeats)
        row = {
            "artifact": name,
            "tokens": tokens,
            "cold_p50_ms": pct(cold, 0.5),
            "cold_p99_ms": pct(cold, 0.99),
            "cached_p50_ms": statistics.median(cached),
            "second_stage_share": second,
        }
        results.append(row)
        print(f"{tokens:>7}{pct(cold, 0.5):>13.2f}{pct(cold, 0.99):>13.2f}{row['cached_p50_ms']:>15.3f}{second:>9.0%}")
    texts = real_prompts()
    cold, second = timed(router, texts)
    results.append(
        {
            "artifact": name,
            "tokens": "real",
            "n": len(texts),
            "cold_p50_ms": pct(cold, 0.5),
            "cold_p99_ms": pct(cold, 0.99),
            "second_stage_share": second,
        }
    )
    print(f"{'real':>7}{pct(cold, 0.5):>13.2f}{pct(cold, 0.99):>13.2f}{'':>15}{second:>9.0%}  ({len(texts)} prompts)")
    return results


def gateway(name: str) -> dict[str, object]:
    """Start time and RSS of a gateway process serving ``name`` (fake tiers, SQLite ledger)."""
    policy = (REPO / "policies" / "fake.yaml").read_text()
    policy = re.sub(r"(?m)^(\s+artifact:) \S+", rf"\1 {name}", policy)
    with tempfile.TemporaryDirectory(prefix="tierwise-bench-") as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(policy)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TIERWISE_DATABASE_URL": f"sqlite:///{tmp}/ledger.db",
            "TIERWISE_SPOOL_DIR": f"{tmp}/journal",
        }
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--policy", str(path), "--port", str(port)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"gateway exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("gateway did not answer within 120 s")
                time.sleep(0.05)
            start_s = time.perf_counter() - t0
            with httpx.Client(base_url=base + "/v1", timeout=30) as client:
                for i in range(50):
                    body = {"model": "auto", "messages": [{"role": "user", "content": prompt(60, 7_000 + i)}]}
                    client.post("/chat/completions", json=body).raise_for_status()
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss_mb = int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) / 1024  # type: ignore[index]
            torch_loaded = "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(
        f"gateway with {name}: up in {start_s:.2f} s, RSS {rss_mb:.0f} MB after 50 auto requests, torch loaded: {torch_loaded}"
    )
    return {"artifact": name, "start_s": start_s, "rss_mb": rss_mb, "torch_loaded": torch_loaded}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--artifacts", nargs="+", default=["default", "minilm", "two-stage"])
    ap.add_argument("--no-gateway", action="store_true")
    args = ap.parse_args()
    results: list[dict[str, object]] = []
    for name in args.artifacts:
        path = resolve_artifact(name)
        t0 = time.perf_counter()
        router = Router.load(path)
        load_s = time.perf_counter() - t0
        if router.artifact.encoder == "minilm-l6-v2":
            import torch

            torch.set_num_threads(1)  # one thread: the gateway decides on a worker thread, beside other requests
        router.warm()
        stages = f"{router.first_stage.artifact.encoder} then " if router.first_stage else ""
        print(f"\nartifact {name}: {stages}{router.artifact.encoder} ({router.version}), loaded in {load_s:.2f} s")
        results += measure(router, name, args.repeats)
    if not args.no_gateway:
        for name in args.artifacts:
            results.append(gateway(name))
    out = REPO / "bench" / "out" / "router_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
