"""Throughput and CPU per request of two revisions of the gateway (and, optionally, Portkey's
gateway), measured in turns so that a noisy machine affects them alike.

    python bench/ab.py REV_A REV_B [--rounds 5] [--seconds 10] [--portkey]
    python bench/ab.py REV_A REV_B --instructions [--rounds 3] [--requests 1000] [--otel]

Each revision runs from its own git worktree on the pinned route, one worker, SQLite ledger,
against the same mock upstream; each round starts every contender afresh, warms it up, then
runs wrk at 16 connections. Prints the medians over rounds and each one's ratio to REV_A.

A change worth a few percent hides in these machines' noise (rounds of the same revision
differ by ±15%). ``--instructions`` counts instead: each revision serves under valgrind's
callgrind, and the user-space instructions of ``--requests`` sequential requests (after a
warm-up) are divided by their number, with the server's timers made count-based (see
``contenders.tierwise``). Runs of the same revision still differ by up to ~1.5% (how often
the event loop wakes per request depends on timing), so take the median of a few rounds.
Work in the kernel (socket writes, wake-ups) is not in that count. ``--otel`` adds REV_B with its
own spans exported (``TIERWISE_OTEL_ENDPOINT``, the mock as the collector): what tracing costs a
request, the export thread's batching and protobuf encoding included.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

import contenders
import httpx
from loadgen import PROMPT, request_body
from measure import HERE, PY, REPO, Target, free_port, log, process, wrk


def worktree(rev: str, parent: Path) -> Path:
    path = parent / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True)
    return path


def instructions_per_request(t: Target, dumps: Path, requests: int) -> float:
    """Instructions the server (under callgrind) spends on each of ``requests`` sequential ones."""
    pid = str(t.pids[0])
    body = request_body(t.api, t.model, PROMPT, 16)
    with httpx.Client(headers={"authorization": f"Bearer {t.key}", **t.headers}, timeout=60) as client:

        def send(n: int) -> None:
            for _ in range(n):
                client.post(t.url, json=body).raise_for_status()

        send(max(100, requests // 4))  # warm-up: caches, pooled connections, lazy imports
        subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        send(requests)
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    [dump] = dumps.glob(f"callgrind.{pid}.*")
    return int(re.search(r"^summary: (\d+)", dump.read_text(), re.MULTILINE).group(1)) / requests  # type: ignore[union-attr]


def count_instructions(
    runs_of: dict[str, tuple[Path, dict[str, str]]], mock: str, tmp: Path, requests: int, rounds: int
) -> int:
    """``runs_of``: each contender's name, checkout and settings."""
    runs: dict[str, list[float]] = {name: [] for name in runs_of}
    for i in range(rounds):
        for k, (name, (tree, env)) in enumerate(runs_of.items()):
            dumps = tmp / f"callgrind-{k}-{i}"
            dumps.mkdir()
            under = ["valgrind", "--tool=callgrind", "-q", f"--callgrind-out-file={dumps}/callgrind.%p"]
            with contenders.tierwise(mock, tmp / f"{k}-cg-{i}", checkout=tree, under=under, extra_env=env) as t:
                runs[name].append(instructions_per_request(t, dumps, requests))
            log(f"round {i + 1} {name}: {runs[name][-1]:,.0f} instructions per request")
    med = {name: statistics.median(ns) for name, ns in runs.items()}
    first = next(iter(med.values()))
    print(
        f"\n{'':>16} {'instructions/request':>21} {'vs A':>7}   (medians of {rounds}; {requests} sequential requests)"
    )
    for name, n in med.items():
        print(f"{name[:16]:>16} {n:21,.0f} {n / first:6.3f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("revs", nargs=2, metavar="REV")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--portkey", action="store_true", help="Portkey's gateway as a third contender")
    ap.add_argument("--instructions", action="store_true", help="count instructions per request (callgrind)")
    ap.add_argument("--requests", type=int, default=1000, help="with --instructions: requests counted")
    ap.add_argument("--otel", action="store_true", help="with --instructions: REV_B again with OpenTelemetry on")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tierwise-ab-"))
    trees = {rev: worktree(rev, tmp) for rev in args.revs}
    mport = free_port()
    mock = f"http://127.0.0.1:{mport}"

    def start(name: str, i: int) -> AbstractContextManager[Target]:
        if name == "portkey":
            return contenders.portkey(mock)
        return contenders.tierwise(mock, tmp / f"{name}-{i}", checkout=trees[name])

    names = [*args.revs, *(["portkey"] if args.portkey and contenders.portkey_installed() else [])]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        with process([PY, str(HERE / "mock_upstream.py"), "--port", str(mport)], mock + "/v1/models"):
            if args.instructions:
                runs_of = {rev: (trees[rev], {}) for rev in args.revs}
                if args.otel:  # REV_B again, exporting its spans (to the mock, which takes any POST)
                    runs_of[f"{args.revs[1]}+otel"] = (trees[args.revs[1]], {"TIERWISE_OTEL_ENDPOINT": mock})
                return count_instructions(runs_of, mock, tmp, args.requests, args.rounds)
            for i in range(args.rounds):
                for name in names:
                    with start(name, i) as t:
                        wrk(t, 2, 16)
                        r = wrk(t, args.seconds, 16)
                    runs[name].append({"rps": r["rps"], "cpu_ms": r["cpu_s_per_1k"]})
                    log(f"round {i + 1} {name}: {r['rps']:.0f} req/s, {r['cpu_s_per_1k']:.3f} ms CPU per request")
    finally:
        for path in trees.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)
    base = args.revs[0]
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "cpu_ms")} for name, rs in runs.items()}
    print(f"\n{'':>12} {'req/s':>8} {'CPU ms/req':>11} {'req/s vs A':>11} {'CPU vs A':>9}   (medians of {args.rounds})")
    for name, m in med.items():
        print(
            f"{name[:12]:>12} {m['rps']:8.0f} {m['cpu_ms']:11.3f} "
            f"{m['rps'] / med[base]['rps']:10.2f}x {m['cpu_ms'] / med[base]['cpu_ms']:8.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
