"""Gateway benchmark: Tierwise vs LiteLLM proxy, same machine, same run, same mock upstream.

    python bench/run.py            # full run (~10 min): table, bench/out/gateway.json, bench/out/gateway.png
    python bench/run.py --smoke    # ~1 min: keeps the harness working (used by the test suite)

Every process is separate: the mock upstream, each gateway (one worker each), the open-loop load
generator (bench/loadgen.py) and wrk for closed-loop throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
LITELLM_VENV = HERE / ".venv-litellm"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def process(
    cmd: list[str],
    ready_url: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 90,
    headers: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    logf = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} exited early; see {logf.name}")
            try:
                if httpx.get(ready_url, headers=headers, timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{cmd[:3]} not ready after {timeout_s}s; see {logf.name}")
            time.sleep(0.3)
        log(f"ready in {time.monotonic() - started:.1f}s: {' '.join(cmd[:4])}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(child.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out += tree(int(child.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def loadgen(
    url: str, model: str, rate: int, seconds: float, key: str = "sk-bench", stream: bool = False, unique: bool = False
) -> dict[str, Any]:
    cmd = [
        PY,
        str(HERE / "loadgen.py"),
        "--url",
        url,
        "--model",
        model,
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--key",
        key,
    ]
    cmd += ["--stream"] if stream else []
    cmd += ["--unique"] if unique else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds * 10 + 120)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model": "%s", "messages": [{"role": "user", "content": "Summarise the benefits of unit tests in one sentence."}], "max_tokens": 16}'
"""


def wrk(url: str, model: str, seconds: int, connections: int, pids: list[int]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_LUA % model)
    cpu0 = cpu_seconds(pids)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", fh.name, url],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = cpu_seconds(pids) - cpu0
    text = out.stdout
    reqs = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = int(bad.group(1)) if bad else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errs += sum(int(x) for x in sock.groups()) if sock else 0
    return {
        "requests": reqs,
        "rps": rps,
        "errors": errs,
        "error_rate": errs / max(reqs, 1),
        "cpu_s_per_1k": cpu / max(reqs, 1) * 1000,
    }


def max_throughput(url: str, model: str, seconds: int, pids: list[int]) -> dict[str, Any]:
    """Closed loop at rising concurrency; the best rate with < 1% errors."""
    best: dict[str, Any] = {"rps": 0.0}
    for conns in (16, 64):
        r = wrk(url, model, seconds, conns, pids)
        log(f"  wrk c={conns}: {r['rps']:.0f} req/s, {r['error_rate']:.2%} errors, {r['cpu_s_per_1k']:.2f} CPU-s/1k")
        if r["error_rate"] < 0.01 and r["rps"] > best["rps"]:
            best = {**r, "connections": conns}
    return best


def tierwise_policy(mock: str, path: Path) -> None:
    path.write_text(
        f"""
version: 1
tiers:
  - name: local
    deployments: [{{name: bench-local, model: openai/mock, api_base: "{mock}/v1", price: {{input_per_1m: 0, output_per_1m: 0}}}}]
  - name: mid
    deployments: [{{name: bench-mid, model: openai/mock, api_base: "{mock}/v1", price: {{input_per_1m: 0.15, output_per_1m: 0.6}}}}]
  - name: frontier
    deployments: [{{name: bench-frontier, model: openai/mock, api_base: "{mock}/v1", price: {{input_per_1m: 2.5, output_per_1m: 10}}}}]
routes:
  - {{name: auto, auto: true, tier: mid}}
  - {{name: mock, tier: mid}}
router: {{artifact: default}}
"""
    )


def litellm_config(mock: str, path: Path) -> None:
    path.write_text(
        f"""
model_list:
  - model_name: mock
    litellm_params:
      model: openai/mock
      api_base: {mock}/v1
      api_key: sk-none
litellm_settings:
  telemetry: false
"""
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--out", default=str(OUT), help="where gateway.json and gateway.png go")
    args = ap.parse_args()
    out_dir = Path(args.out)
    # 25 req/s: a moderate rate below every contender's capacity, so latency is not queueing
    rate, secs, wrk_s = (20, 3, 3) if args.smoke else (25, 20, 10)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tierwise-bench-"))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores",
        "rate_rps": rate,
        "contenders": {},
    }
    have_wrk = shutil.which("wrk") is not None
    litellm_bin = LITELLM_VENV / "bin" / "litellm"
    run_litellm = not args.skip_litellm and litellm_bin.exists()
    if not run_litellm and not args.skip_litellm:
        log(f"LiteLLM proxy not installed in {LITELLM_VENV} (make bench installs it); skipping it")

    mport, tport, lport = free_port(), free_port(), free_port()
    mock = f"http://127.0.0.1:{mport}"
    tierwise_policy(mock, tmp / "policy.yaml")
    litellm_config(mock, tmp / "litellm.yaml")
    env_tw = {
        "TIERWISE_DATABASE_URL": f"sqlite:///{tmp / 'ledger.db'}",
        "TIERWISE_SPOOL_PATH": str(tmp / "spool.jsonl"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    with process([PY, str(HERE / "mock_upstream.py"), "--port", str(mport)], mock + "/v1/models") as mock_proc:
        contenders: list[tuple[str, str, str, list[int], str]] = []
        # direct: the floor
        res = loadgen(mock + "/v1/chat/completions", "mock", rate, secs)
        res["stream"] = loadgen(mock + "/v1/chat/completions", "mock", rate, secs, stream=True)
        if have_wrk and not args.smoke:
            res["max"] = max_throughput(mock + "/v1/chat/completions", "mock", wrk_s, tree(mock_proc.pid))
        results["contenders"]["direct"] = res
        log(f"direct: p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms")

        with process(
            [
                PY,
                "-m",
                "gateway.cli",
                "serve",
                "--policy",
                str(tmp / "policy.yaml"),
                "--port",
                str(tport),
                "--log-level",
                "warning",
            ],
            f"http://127.0.0.1:{tport}/readyz",
            env=env_tw,
            timeout_s=120,
        ) as tw:
            pids = tree(tw.pid)
            url = f"http://127.0.0.1:{tport}/v1/chat/completions"
            contenders.append(("tierwise-pinned", url, "mock", pids, "sk-bench"))
            contenders.append(("tierwise-auto", url, "auto", pids, "sk-bench"))
            rss_warm = None
            for name, u, model, p, key in contenders:
                res = loadgen(u, model, rate, secs, key=key)
                res["stream"] = loadgen(u, model, rate, secs, key=key, stream=True)
                if name == "tierwise-auto":
                    res["unique_prompts"] = loadgen(u, model, max(5, rate // 5), secs, key=key, unique=True)
                if have_wrk and not args.smoke:
                    res["max"] = max_throughput(u, model, wrk_s, p)
                results["contenders"][name] = res
                log(f"{name}: p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms")
            rss_warm = rss_mb(pids)
            if have_wrk and not args.smoke:
                # memory growth: 10k then 100k requests in total
                total, marks = 0, {}
                while total < 100_000:
                    r = wrk(url, "mock", 10, 32, pids)
                    total += r["requests"]
                    if "10k" not in marks and total >= 10_000:
                        marks["10k"] = rss_mb(pids)
                marks["100k"] = rss_mb(pids)
                results["contenders"]["tierwise-pinned"]["rss_mb"] = {"warm": rss_warm, **marks, "requests": total}
                log(
                    f"tierwise RSS: warm {rss_warm:.0f} MB, 10k {marks['10k']:.0f} MB, 100k {marks['100k']:.0f} MB ({total} requests)"
                )
            else:
                results["contenders"]["tierwise-pinned"]["rss_mb"] = {"warm": rss_warm}

        if run_litellm:
            env_ll = {"LITELLM_MASTER_KEY": "sk-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
            cmd = [str(litellm_bin), "--config", str(tmp / "litellm.yaml"), "--port", str(lport), "--num_workers", "1"]
            with process(cmd, f"http://127.0.0.1:{lport}/health/liveliness", env=env_ll, timeout_s=180) as ll:
                pids = tree(ll.pid)
                url = f"http://127.0.0.1:{lport}/v1/chat/completions"
                res = loadgen(url, "mock", rate, secs)
                res["stream"] = loadgen(url, "mock", rate, secs, stream=True)
                if have_wrk and not args.smoke:
                    res["max"] = max_throughput(url, "mock", wrk_s, pids)
                res["rss_mb"] = {"after_runs": rss_mb(pids)}
                results["contenders"]["litellm-proxy"] = res
                log(f"litellm-proxy: p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms")

    report(results, out_dir)
    return 0


def report(results: dict[str, Any], out_dir: Path) -> None:
    c = results["contenders"]
    d = c["direct"]
    rows = []
    for name, r in c.items():
        added50 = r["p50_ms"] - d["p50_ms"] if r.get("p50_ms") is not None else None
        added99 = r["p99_ms"] - d["p99_ms"] if r.get("p99_ms") is not None else None
        r["added_p50_ms"], r["added_p99_ms"] = added50, added99
        mx = r.get("max", {})
        rows.append(
            (
                name,
                added50,
                added99,
                r["stream"].get("ttft_p50_ms"),
                mx.get("rps"),
                mx.get("cpu_s_per_1k"),
                r.get("rss_mb"),
            )
        )
    print(
        f"\nGateway benchmark {results['date']} ({results['machine']}); open loop at {results['rate_rps']} req/s; one worker per gateway"
    )
    print(f"{'contender':<18}{'+p50 ms':>9}{'+p99 ms':>9}{'TTFT p50':>10}{'max rps':>9}{'CPU-s/1k':>10}  RSS MB")
    f = lambda v, n=2: "-" if v is None else f"{v:.{n}f}"  # noqa: E731
    for name, a50, a99, ttft, rps, cpu, rss in rows:
        print(f"{name:<18}{f(a50):>9}{f(a99):>9}{f(ttft):>10}{f(rps, 0):>9}{f(cpu):>10}  {rss or ''}")
    if "tierwise-auto" in c and "unique_prompts" in c["tierwise-auto"]:
        u = c["tierwise-auto"]["unique_prompts"]
        print(
            f"tierwise-auto with a new prompt every request (router encodes each): p50 {f(u['p50_ms'])} ms, p99 {f(u['p99_ms'])} ms"
        )
    if "litellm-proxy" in c:
        ll, tw = c["litellm-proxy"], c["tierwise-pinned"]
        if tw["added_p50_ms"] and ll["added_p50_ms"]:
            print(f"ratio added p50 tierwise/litellm: {tw['added_p50_ms'] / ll['added_p50_ms']:.3f} (target <= 0.1)")
        if tw.get("max", {}).get("rps") and ll.get("max", {}).get("rps"):
            print(f"ratio max rps tierwise/litellm: {tw['max']['rps'] / ll['max']['rps']:.1f}x (target >= 3x)")
    (out_dir / "gateway.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out_dir)


def plot(results: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = results["contenders"]
    names = [n for n in c if n != "direct"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], [c[n]["added_p50_ms"] or 0 for n in names], 0.4, label="p50")
    axes[0].bar([i + 0.2 for i in x], [c[n]["added_p99_ms"] or 0 for n in names], 0.4, label="p99")
    axes[0].set_xticks(list(x), names)
    axes[0].set_ylabel("ms added over direct")
    axes[0].set_title(f"Added latency at {results['rate_rps']} req/s")
    axes[0].legend()
    rps = [c[n].get("max", {}).get("rps", 0) for n in names]
    axes[1].bar(list(x), rps, color="#2ca02c")
    axes[1].set_xticks(list(x), names)
    axes[1].set_ylabel("requests/s (< 1% errors)")
    axes[1].set_title("Max sustained throughput, 1 worker")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Tierwise vs LiteLLM proxy, same mock upstream ({results['date']}, {results['machine']})")
    fig.tight_layout()
    fig.savefig(out_dir / "gateway.png")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
