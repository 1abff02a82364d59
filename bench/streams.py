"""Long streams at rising concurrency: what each gateway adds per chunk, holds per open stream and
spends per chunk when thousands of streams are open at once, as agents' traffic keeps them.

One paced mock (bench/stream_mock.py: 10 chunks/s, each stamped with the time it left) and, per
step, one load generator process (bench/stream_client.py) opening N streams at 250/s; every
stream lasts ``--seconds`` (20 by default). Per contender and step: per-chunk delay p50/p99 (the
mock's write to the client's read) and what the gateway adds over direct at the same step,
streams that failed or were cut short, the gateway's peak RSS over its idle RSS per open stream,
CPU per chunk of the gateway, the mock and the load generator, and for Tierwise its event loop's
lag p99 (from its /metrics histogram, so a bucket's upper bound).

    python bench/streams.py [--steps 100,250,500,1000,2000] [--seconds 20] [--smoke]
        [--skip-portkey] [--skip-litellm]
Writes streams.json and streams.png to bench/out/ (``--out``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from contenders import litellm, litellm_installed, portkey, portkey_installed, tierwise
from measure import HERE, PY, Target, cpu_seconds, free_port, log, process, rss_mb

OUT = HERE / "out"
START_RATE = 250.0  # streams opened a second


@contextmanager
def mock_upstream() -> Iterator[tuple[str, int]]:
    port = free_port()
    cmd = [PY, str(HERE / "stream_mock.py"), "--port", str(port)]
    with process(cmd, f"http://127.0.0.1:{port}/v1/models") as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


@contextmanager
def direct(mock: str) -> Iterator[Target]:
    yield Target(mock + "/v1/chat/completions", "mock", [])


def loop_lag_buckets(t: Target) -> dict[float, float] | None:
    """Tierwise's event-loop lag histogram, cumulative count per upper bound (None elsewhere)."""
    try:
        text = httpx.get(t.url.replace("/v1/chat/completions", "/metrics"), timeout=5).text
    except httpx.HTTPError:
        return None
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("tierwise_event_loop_lag_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = buckets.get(float(bound), 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets or None


def lag_p99_ms(before: dict[float, float] | None, after: dict[float, float] | None) -> float | None:
    if not before or not after:
        return None
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1]
    for bound, cumulative in counts:
        if total and cumulative >= 0.99 * total:
            return bound * 1000
    return None


def step(t: Target, mock_pid: int, streams: int, chunks: int, idle_rss: float) -> dict[str, Any]:
    url = urlsplit(t.url)
    cmd = [PY, str(HERE / "stream_client.py"), "--host", url.hostname or "127.0.0.1", "--port", str(url.port)]
    cmd += ["--path", url.path, "--model", t.model, "--key", t.key, "--streams", str(streams)]
    cmd += ["--chunks", str(chunks), "--start-rate", str(START_RATE), "--timeout", str(chunks / 10 + 60)]
    for name, value in t.headers.items():
        cmd += ["--header", f"{name}:{value}"]
    lag_before = loop_lag_buckets(t) if t.pids else None
    gateway0, mock0 = cpu_seconds(t.pids), cpu_seconds([mock_pid])
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = 0.0
    with tempfile.TemporaryFile() as out:
        client = subprocess.Popen(cmd, stdout=out)
        while client.poll() is None:
            peak = max(peak, rss_mb(t.pids))
            time.sleep(0.5)
        out.seek(0)
        result: dict[str, Any] = json.loads(out.read().decode().strip().splitlines()[-1])
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_chunk = 1e6 / max(result["chunks"], 1)
    loadgen_s = children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime
    result |= {
        "gateway_cpu_us_per_chunk": (cpu_seconds(t.pids) - gateway0) * per_chunk if t.pids else None,
        "mock_cpu_us_per_chunk": (cpu_seconds([mock_pid]) - mock0) * per_chunk,
        "loadgen_cpu_us_per_chunk": loadgen_s * per_chunk,
        "rss_peak_mb": peak if t.pids else None,
        "rss_kb_per_stream": (peak - idle_rss) * 1024 / streams if t.pids else None,
        "loop_lag_p99_ms": lag_p99_ms(lag_before, loop_lag_buckets(t)) if t.pids else None,
    }
    return result


def contenders(args: argparse.Namespace) -> list[tuple[str, Callable[[str, Path], AbstractContextManager[Target]]]]:
    out: list[tuple[str, Callable[[str, Path], AbstractContextManager[Target]]]] = [
        ("direct", lambda mock, _: direct(mock)),
        ("tierwise", lambda mock, work: tierwise(mock, work / "tierwise")),
    ]
    if not args.smoke:
        out.append(("tierwise-2w", lambda mock, work: tierwise(mock, work / "tierwise-2w", workers=2)))
    peers = (
        ("portkey", "Portkey's gateway", portkey_installed(), args.skip_portkey, lambda mock, _: portkey(mock)),
        ("litellm", "LiteLLM proxy", litellm_installed(), args.skip_litellm, litellm),
    )
    for name, what, installed, skipped, start in peers:
        if args.smoke or skipped:
            continue
        if installed:
            out.append((name, start))
        else:
            log(f"{what} is not installed (make bench installs it): skipped")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    steps = [int(s) for s in args.steps.split(",")]
    chunks = int(args.seconds * 10)
    results: dict[str, Any] = {"steps": steps, "chunks": chunks, "start_rate": START_RATE, "contenders": {}}
    with mock_upstream() as (mock, mock_pid), tempfile.TemporaryDirectory(prefix="tierwise-streams-") as work:
        for name, start in chosen(args):
            rows: list[dict[str, Any]] = []
            results["contenders"][name] = rows
            try:
                with start(mock, Path(work)) as t:
                    step(t, mock_pid, 10, 10, 0.0)  # warm-up: connections, first-request imports
                    idle = rss_mb(t.pids)
                    for n in steps:
                        r = step(t, mock_pid, n, chunks, idle)
                        r["concurrent"] = n
                        rows.append(r)
                        log(
                            f"{name} x{n}: chunk p50 {_ms(r['chunk_p50_ms'])} p99 {_ms(r['chunk_p99_ms'])}, "
                            f"{r['failed']} failed {r['outcomes']}, "
                            f"gateway {_num(r['gateway_cpu_us_per_chunk'])} us/chunk, "
                            f"RSS {_num(r['rss_kb_per_stream'])} KB/stream, loop lag p99 {_ms(r['loop_lag_p99_ms'])}"
                        )
                        if r["failed"] > n / 20 or (r["chunk_p99_ms"] or 0) > 1000:
                            # past its capacity: a larger step only fails harder, for minutes
                            log(f"{name}: past its capacity at {n} streams; its larger steps are skipped")
                            break
            except RuntimeError as exc:  # a peer that would not start: recorded, not fatal
                log(f"{name} did not run: {exc}")
                results.setdefault("not_run", {})[name] = str(exc)
    _added(results)
    results["holds"] = {
        name: max((r["concurrent"] for r in rows if r["failed"] == 0 and (r["added_p99_ms"] or 0) <= 50), default=0)
        for name, rows in results["contenders"].items()
        if name != "direct"
    }
    return results


def chosen(args: argparse.Namespace) -> list[tuple[str, Callable[[str, Path], AbstractContextManager[Target]]]]:
    every = contenders(args)
    if not args.only:
        return every
    names = {"direct", *args.only.split(",")}  # direct: what the others' added delay is taken over
    return [c for c in every if c[0] in names]


def _added(results: dict[str, Any]) -> None:
    """Per-chunk delay over direct's at the same step."""
    base = {r["concurrent"]: r for r in results["contenders"].get("direct", [])}
    for name, rows in results["contenders"].items():
        for r in rows:
            d = base.get(r["concurrent"])
            for p in ("p50", "p99"):
                v, b = r[f"chunk_{p}_ms"], d and d[f"chunk_{p}_ms"]
                r[f"added_{p}_ms"] = None if v is None or b is None or name == "direct" else v - b


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def table(results: dict[str, Any]) -> str:
    head = (
        "| contender | streams | failed | chunk p50 / p99 ms | added p50 / p99 ms | TTFT p99 ms | gateway µs/chunk "
        "| mock / loadgen µs/chunk | RSS KB/stream | loop lag p99 ms |"
    )
    lines = [head, "| --- " * 10 + "|"]
    for name, rows in results["contenders"].items():
        for r in rows:
            lines.append(
                f"| {name} | {r['concurrent']:,} | {r['failed']} | {_f(r['chunk_p50_ms'])} / {_f(r['chunk_p99_ms'])} "
                f"| {_f(r['added_p50_ms'])} / {_f(r['added_p99_ms'])} | {_f(r['ttft_p99_ms'])} "
                f"| {_num(r['gateway_cpu_us_per_chunk'])} "
                f"| {_num(r['mock_cpu_us_per_chunk'])} / {_num(r['loadgen_cpu_us_per_chunk'])} "
                f"| {_num(r['rss_kb_per_stream'])} | {_f(r['loop_lag_p99_ms'])} |"
            )
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = dict(zip(results["contenders"], plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for name, rows in results["contenders"].items():
        shown = [r for r in rows if r["chunk_p99_ms"] is not None]
        xs = [r["concurrent"] for r in shown]
        lat.plot(xs, [r["chunk_p99_ms"] for r in shown], marker="o", label=name, color=colours[name])
        if name != "direct":
            kb = [r["rss_kb_per_stream"] for r in rows]
            mem.plot([r["concurrent"] for r in rows], kb, marker="o", label=name, color=colours[name])
    lat.axhline(50, color="grey", linestyle=":", linewidth=1)
    lat.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="ms")
    lat.set_title("Per-chunk delay p99 (mock's write to client's read)")
    mem.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="KB")
    mem.set_title("Gateway RSS per open stream (peak over idle)")
    for ax in (lat, mem):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{results['chunks']} chunks at 10/s per stream, opened at {results['start_rate']:.0f}/s; 2 shared cores"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="100,250,500,1000,2000,3000")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each stream lasts (10 chunks a second)")
    ap.add_argument("--smoke", action="store_true", help="direct and Tierwise only, one small step")
    ap.add_argument("--only", help="comma-separated contenders (direct always runs), e.g. tierwise,portkey")
    ap.add_argument("--skip-portkey", action="store_true")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.seconds = "20", 2.0
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streams.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "streams.png")
    print(table(results))
    print("streams held at added p99 <= 50 ms and none failed:", results["holds"])


if __name__ == "__main__":
    main()
