"""Where a pinned request's CPU goes: py-spy samples `tierwise serve` (one worker, SQLite ledger)
while wrk holds 16 connections open against the mock upstream.

    python bench/hotspots.py [--seconds 20] [--top 30] [--out bench/out/hotspots.txt]

Prints each thread's CPU per request, and for each busy thread the share of its samples spent
in each function (self) and in each function with what it calls (inclusive); idle samples (the
event loop waiting) are left out.
Needs py-spy (pip install py-spy) and wrk.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import contenders
from measure import HERE, PY, REPO, Target, free_port, log, process, wrk

SPY = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))  # pip puts it beside the interpreter
OWN = {str(p.relative_to(REPO / "gateway")) for p in (REPO / "gateway").rglob("*.py")}  # as py-spy names them
IDLE = ("select (selectors.py", "_run_once (asyncio/base_events.py", "wait (threading.py", "get (queue.py")


def thread_cpu(pid: int) -> collections.Counter[int]:
    """CPU seconds so far of each thread of ``pid``, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: collections.Counter[int] = collections.Counter()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        fields = stat.read_text().rpartition(")")[2].split()
        out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def profile(t: Target, seconds: int) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Collapsed stacks ("frame;frame;... count") of the serving process under wrk, and each
    thread's CPU per request in µs."""
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as fh:
        out = Path(fh.name)
    spy = [SPY, "record", "--pid", str(t.pids[0]), "--duration", str(seconds), "--rate", "250"]
    spy += ["--format", "raw", "--output", str(out), "--threads", "--nonblocking"]
    sampler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result: dict[str, Any] = {}
    load = threading.Thread(target=lambda: result.update(wrk(t, seconds + 2, 16)))
    cpu0 = thread_cpu(t.pids[0])
    load.start()
    sampler.wait()
    load.join()
    cpu = thread_cpu(t.pids[0])
    used = {tid: (cpu[tid] - cpu0[tid]) / result["requests"] * 1e6 for tid in cpu}
    stacks: collections.Counter[str] = collections.Counter()
    names: dict[int, str] = {}
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stacks[stack] += int(count)
        if m := re.match(r"thread \((\d+)\): ([^;]*)", stack):  # py-spy's root frame: the native id
            names[int(m.group(1))] = m.group(2)
    per_request: collections.Counter[str] = collections.Counter()
    for tid, us in used.items():
        per_request[names.get(tid, "other threads")] += us
    out.unlink()
    log(f"{result['rps']:.0f} req/s while sampled")
    return stacks, per_request


def busy(stacks: collections.Counter[str]) -> collections.Counter[str]:
    return collections.Counter({s: n for s, n in stacks.items() if not s.rsplit(";", 1)[-1].startswith(IDLE)})


def report(stacks: collections.Counter[str], per_request: collections.Counter[str], top: int) -> str:
    """Per thread (py-spy's root frame names it): where its busy samples are, self and inclusive."""
    threads: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for stack, n in stacks.items():
        threads[stack.partition(";")[0].partition(": ")[2] or "?"][stack] += n
    lines = ["CPU per request by thread (µs; py-spy's own sampling included):"]
    lines += [f"  {us:7.1f}  {name}" for name, us in per_request.most_common() if us >= 0.5]
    for thread, mine in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(mine.values())
        if total < 0.02 * sum(stacks.values()):
            continue
        self_time: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for stack, n in mine.items():
            functions = [_function(frame) for frame in stack.split(";")[1:]]
            self_time[functions[-1] if functions else "?"] += n
            for function in set(functions):
                inclusive[function] += n
        lines += ["", f"{thread}: {total} busy samples", "  self:"]
        lines += [f"  {n / total:6.1%}  {f}" for f, n in self_time.most_common(top)]
        lines += ["  inclusive (* the gateway's own):"]
        lines += [
            f"  {n / total:6.1%} {'*' if f.rpartition('(')[2].rstrip(')') in OWN else ' '} {f}"
            for f, n in inclusive.most_common(top)
        ]
    return "\n".join(lines)


def _function(frame: str) -> str:
    """``name (file.py:123)`` -> ``name (file.py)``: lines of one function counted together."""
    head, sep, _ = frame.rpartition(":")
    return f"{head})" if sep and frame.endswith(")") else frame


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "hotspots.txt")
    args = ap.parse_args()
    if not Path(SPY).exists() or shutil.which("wrk") is None:
        sys.exit("needs py-spy (pip install py-spy) and wrk (apt-get install wrk)")
    mport = free_port()
    mock = f"http://127.0.0.1:{mport}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        process([PY, str(HERE / "mock_upstream.py"), "--port", str(mport)], mock + "/v1/models"),
        contenders.tierwise(mock, Path(tmp)) as t,
    ):
        wrk(t, 3, 16)  # warm
        log(f"sampling for {args.seconds}s under wrk -c16")
        stacks, per_request = profile(t, args.seconds)
        text = report(busy(stacks), per_request, args.top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
