"""Throughput and CPU per request of two revisions of the gateway (and, optionally, Portkey's
gateway), measured in turns so that a noisy machine affects them alike.

    python bench/ab.py REV_A REV_B [--rounds 5] [--seconds 10] [--portkey]

Each revision runs from its own git worktree on the pinned route, one worker, SQLite ledger,
against the same mock upstream; each round starts every contender afresh, warms it up, then
runs wrk at 16 connections. Prints the medians over rounds and each one's ratio to REV_A.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

import contenders
from measure import HERE, PY, REPO, Target, free_port, log, process, wrk


def worktree(rev: str, parent: Path) -> Path:
    path = parent / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("revs", nargs=2, metavar="REV")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--portkey", action="store_true", help="Portkey's gateway as a third contender")
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
