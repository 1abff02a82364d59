"""Measuring one HTTP target from outside: its processes (CPU, RSS), the open-loop load generator
(bench/loadgen.py, its own process) and wrk for closed-loop throughput."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from loadgen import PROMPT, request_body

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable


@dataclass
class Target:
    """Where to send chat completions, and which processes serve them."""

    url: str
    model: str
    pids: list[int]
    key: str = "sk-bench"
    headers: dict[str, str] = field(default_factory=dict)
    api: str = "chat"  # or "responses": the body the url expects (loadgen.request_body)


@dataclass(frozen=True)
class Plan:
    """How long and how hard each phase runs."""

    rate: int  # open loop, req/s: below every contender's capacity, so latency is not queueing
    seconds: float
    # 1 req/s: LiteLLM proxy spends ~0.1-0.2 s of CPU on a 200-chunk stream and queues from ~3 req/s
    stream_rate: int
    stream_seconds: float
    stream_chunks: int  # 0: no stream phase
    wrk_seconds: int  # 0: no closed-loop phase


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
    cwd: Path = REPO,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until ready_url answers below 500, stop it (and its workers) on exit."""
    logf = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=logf, stderr=subprocess.STDOUT, cwd=cwd)
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} exited early; see {logf.name}")
            try:
                if httpx.get(ready_url, timeout=2).status_code < 500:
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
            proc.wait()


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(child.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out += tree(int(child.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def settled(pid: int, timeout_s: float = 90) -> list[int]:
    """The process tree once it idles (< 5% of a core for a second): every worker has started."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = tree(pid)
        before = cpu_seconds(pids)
        time.sleep(1)
        if (cpu_seconds(pids) - before < 0.05 and set(tree(pid)) == set(pids)) or time.monotonic() > deadline:
            return pids


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
    t: Target, rate: int, seconds: float, stream: bool = False, unique: bool = False, max_tokens: int = 16
) -> dict[str, Any]:
    cmd = [PY, str(HERE / "loadgen.py"), "--url", t.url, "--model", t.model, "--key", t.key, "--api", t.api]
    cmd += ["--rate", str(rate), "--seconds", str(seconds), "--max-tokens", str(max_tokens)]
    cmd += ["--stream"] if stream else []
    cmd += ["--unique"] if unique else []
    for name, value in t.headers.items():
        cmd += ["--header", f"{name}:{value}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds * 10 + 120)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _wrk_script(t: Target) -> str:
    body = json.dumps(request_body(t.api, t.model, PROMPT, 16))
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {t.key}", **t.headers}
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def wrk(t: Target, seconds: int, connections: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_wrk_script(t))
    cpu0 = [cpu_seconds([pid]) for pid in t.pids]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", fh.name, t.url],
        capture_output=True,
        text=True,
        check=True,
    )
    # per process, so an uneven spread over workers shows
    per_process = [cpu_seconds([pid]) - c for pid, c in zip(t.pids, cpu0, strict=True)]
    cpu = sum(per_process)
    Path(fh.name).unlink()
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
        "cpu_s_by_process": [round(c, 2) for c in per_process],
    }


def max_throughput(t: Target, seconds: int) -> dict[str, Any]:
    """Closed loop at rising concurrency; the best rate with < 1% errors."""
    best: dict[str, Any] = {"rps": 0.0}
    for conns in (16, 64):
        r = wrk(t, seconds, conns)
        log(f"  wrk c={conns}: {r['rps']:.0f} req/s, {r['error_rate']:.2%} errors, {r['cpu_s_per_1k']:.2f} CPU-s/1k")
        if r["error_rate"] < 0.01 and r["rps"] > best["rps"]:
            best = {**r, "connections": conns}
    return best


def measure(name: str, t: Target, plan: Plan) -> dict[str, Any]:
    """The phases every contender goes through: open loop, a long stream, closed-loop throughput."""
    res = loadgen(t, plan.rate, plan.seconds)
    log(f"{name}: p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms")
    if plan.stream_chunks:
        s = res["stream"] = loadgen(
            t, plan.stream_rate, plan.stream_seconds, stream=True, max_tokens=plan.stream_chunks
        )
        log(
            f"  stream of {plan.stream_chunks}: TTFT {s['ttft_p50_ms']:.2f} ms, TTLT {s['ttlt_p50_ms']:.2f} ms, "
            f"{s['content_events_p50']} content events, {s['errors']} errors"
        )
    if plan.wrk_seconds:
        res["max"] = max_throughput(t, plan.wrk_seconds)
    return res
