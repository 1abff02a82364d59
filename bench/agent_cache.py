"""Agent traffic and prompt caching: what the provider bills for the same coding-agent
conversations sent directly to the frontier, through LiteLLM proxy, and through Tierwise.

Every contender gets a fresh loopback upstream (tests/caching_upstream.py) that answers as
Anthropic's Messages API does and caches prefixes by Anthropic's documented rules (breakpoints,
at most 4, 5-minute TTL renewed on use). Each conversation is an Anthropic-SDK agent loop: a
shared system prompt and tools, a task, then turns that alternate a tool result (a file's text)
and a new instruction, each turn with a breakpoint on its last block (as Claude Code places
them). The bill is the upstream's usage priced by litellm's map, call by call; for Tierwise the
ledger's cost is compared with it (it must be equal).

    python bench/agent_cache.py [--conversations 50] [--turns 20] [--smoke] [--only-tierwise]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
from measure import HERE, PY, REPO, free_port, log, process

sys.path.insert(0, str(REPO))
from gateway.demo.server_thread import ServerThread
from gateway.policy.pricing import cost_usd, litellm_price_map
from gateway.usage import Usage
from tests.caching_upstream import CachingUpstream

LITELLM_BIN = HERE / ".venv-litellm" / "bin" / "litellm"
OUT = HERE / "out"
TIERS = {"local": "claude-haiku-4-5", "mid": "claude-sonnet-4-5", "frontier": "claude-opus-4-5"}
EASY = [
    "Rename the variable `tmp` to `total` in utils.py.",
    "Add a docstring to the function parse_args.",
    "Fix the typo 'recieve' in the README.",
    "Sort the imports in main.py.",
    "Change the default port from 8080 to 9090.",
]
HARD = [
    "Design a lock-free multi-producer queue for the scheduler and prove it linearizable.",
    "Find the race condition that corrupts the cache under concurrent writers and fix it without a global lock.",
    "Refactor the query planner to push predicates below joins while preserving outer-join semantics.",
    "Derive the amortised complexity of the rebalancing in tree.py and make it O(log n) worst case.",
    "Port the numerical solver to an implicit scheme that stays stable for stiff systems.",
]
SYSTEM = "You are a coding agent working in a Python repository. " + " ".join(
    f"Rule {i}: keep changes small, run the tests, explain what you changed and why." for i in range(500)
)  # ~10k tokens: coding agents' system prompts and tool definitions run to 10-20k
TOOLS: list[dict[str, Any]] = [
    {
        "name": name,
        "description": f"{name.replace('_', ' ')} in the repository",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
    for name in ("read_file", "edit_file", "run_tests")
]


@dataclass(frozen=True)
class Workload:
    name: str
    conversations: int
    turns: int
    file_lines: int  # each read_file result: ~9.5 tokens a line
    document_lines: int = 0  # a document pasted into the first request (~9.5 tokens a line)


def _file(rng: random.Random, lines: int) -> str:
    return "".join(f"def f{i}(x):\n    return x * {rng.randint(2, 99)} + {rng.randint(0, 9)}\n" for i in range(lines))


def _marked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with one breakpoint, on the last block of its last turn."""
    out = [dict(m) for m in messages]
    last = out[-1]
    content = last["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else [dict(b) for b in content]
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
    out[-1] = {**last, "content": blocks}
    return out


async def conversation(client: anthropic.AsyncAnthropic, model: str, i: int, w: Workload) -> None:
    rng = random.Random(i)
    hard = i % 3 == 0  # a third of the tasks need the frontier
    task = f"{(HARD if hard else EASY)[i % 5]} (ticket {i})"
    if w.document_lines:
        task = f"{_file(rng, w.document_lines)}\n\nAbout the module above: {task}"
    messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    tools = [*TOOLS[:-1], {**TOOLS[-1], "cache_control": {"type": "ephemeral"}}]
    for _ in range(w.turns):
        answer = await client.messages.create(
            model=model, max_tokens=1024, system=system, tools=tools, messages=_marked(messages)
        )
        content = [b.model_dump(exclude_none=True) for b in answer.content]
        messages.append({"role": "assistant", "content": content})
        used = next((b for b in content if b["type"] == "tool_use"), None)
        if used is not None:
            result = {"type": "tool_result", "tool_use_id": used["id"], "content": _file(rng, w.file_lines)}
            messages.append({"role": "user", "content": [result]})
        else:
            follow = rng.choice(HARD if hard and rng.random() < 0.5 else EASY)
            messages.append({"role": "user", "content": f"Next: {follow}"})


async def drive(base_url: str, model: str, w: Workload) -> None:
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=120)
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with gate:
            await conversation(client, model, i, w)

    await asyncio.gather(*(one(i) for i in range(w.conversations)))
    await client.close()


def bill(upstream: CachingUpstream) -> dict[str, Any]:
    """The upstream's usage at litellm's prices, by Anthropic's counting (input excludes cache)."""
    prices = litellm_price_map()
    usd, read, prompt = 0.0, 0, 0
    by_model: dict[str, int] = {}
    for model, u in upstream.billed:
        price = prices.lookup(model)
        assert price is not None, model
        r, w = u["cache_read_input_tokens"], u["cache_creation_input_tokens"]
        hour = u["cache_creation"]["ephemeral_1h_input_tokens"]
        total = u["input_tokens"] + r + w
        usd += cost_usd(price, Usage(total, u["output_tokens"], False, r, w, hour))
        read, prompt = read + r, prompt + total
        by_model[model] = by_model.get(model, 0) + 1
    return {"usd": usd, "calls": len(upstream.billed), "cache_read_share": read / prompt, "calls_by_model": by_model}


@contextmanager
def mock() -> Iterator[CachingUpstream]:
    up = CachingUpstream()
    server = ServerThread(up.app)
    up.url = server.start()
    try:
        yield up
    finally:
        server.stop()


def tierwise_policy(url: str, extra: str) -> str:
    deployments = "\n".join(
        f"  - name: {tier}\n    deployments:\n      - {{name: {tier}-claude, model: anthropic/{model}, "
        f'api_base: "{url}", api_key_env: BENCH_ANTHROPIC_KEY, max_retries: 0}}'
        for tier, model in TIERS.items()
    )
    return f"version: 1\ntiers:\n{deployments}\nroutes:\n  - {{name: auto, auto: true}}\n{extra}\n"


# Each way of handling a conversation's turns, under two routers: the shipped artifact at its
# calibrated cost weight (which sends these prompts to mid, read_file contents to the frontier),
# and at cost weight 0.05, which tells these easy tasks from the hard ones, so its choice changes
# within a conversation as instructions do.
_ROUTERS = {
    "shipped router": "router: {artifact: default}",
    "cost weight 0.05": "router: {artifact: default, cost_weight: 0.05}",
}
_HANDLING = {
    "per-turn routing (sessions off)": "sessions: {enabled: false}",
    "sessions, never down (default)": "sessions: {enabled: true}",
    "sessions, down when cheaper": "sessions: {move_down: when_cheaper}",
}
SESSIONS = {
    f"Tierwise, {how}; {r}": f"{router}\n{handling}"
    for r, router in _ROUTERS.items()
    for how, handling in _HANDLING.items()
}


def run_tierwise(name: str, w: Workload, work: Path) -> dict[str, Any]:
    with mock() as up:
        work.mkdir(parents=True, exist_ok=True)
        policy = work / "policy.yaml"
        policy.write_text(tierwise_policy(up.url, SESSIONS[name]))
        db = work / "ledger.db"
        port = free_port()
        env = {
            "TIERWISE_DATABASE_URL": f"sqlite:///{db}",
            "TIERWISE_SPOOL_DIR": str(work / "journal"),
            "BENCH_ANTHROPIC_KEY": "sk-ant-bench",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        cmd = [PY, "-m", "gateway.cli", "serve", "--policy", str(policy), "--port", str(port), "--log-level", "warning"]
        with process(cmd, f"http://127.0.0.1:{port}/readyz", env=env, timeout_s=180):
            asyncio.run(drive(f"http://127.0.0.1:{port}", "auto", w))
        # the server has stopped: its ledger is flushed
        with sqlite3.connect(db) as con:
            (ledger,) = con.execute(
                "SELECT coalesce(sum(cost_usd), 0) FROM requests WHERE purpose = 'client'"
            ).fetchone()
            tiers = dict(con.execute("SELECT tier, count(*) FROM requests GROUP BY tier").fetchall())
        out = bill(up)
        return {**out, "ledger_usd": ledger, "ledger_minus_bill": ledger - out["usd"], "tiers": tiers}


def run_direct(w: Workload) -> dict[str, Any]:
    with mock() as up:
        asyncio.run(drive(up.url, TIERS["frontier"], w))
        return bill(up)


def run_litellm(w: Workload, work: Path) -> dict[str, Any]:
    with mock() as up:
        config = work / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: frontier\n    litellm_params:\n"
            f"      model: anthropic/{TIERS['frontier']}\n      api_base: {up.url}\n      api_key: sk-ant-bench\n"
            "litellm_settings:\n  telemetry: false\n"
        )
        port = free_port()
        env = {"LITELLM_MASTER_KEY": "sk-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        cmd = [str(LITELLM_BIN), "--config", str(config), "--port", str(port), "--num_workers", "1"]
        with process(cmd, f"http://127.0.0.1:{port}/health/liveliness", env=env, timeout_s=180):
            asyncio.run(drive(f"http://127.0.0.1:{port}", "frontier", w))
        return bill(up)


def plot(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results)
    names = list(results[workloads[0]])
    fig, axes = plt.subplots(1, len(workloads), figsize=(7 * len(workloads), 0.55 * len(names) + 2), sharey=True)
    for ax, workload in zip(axes if len(workloads) > 1 else [axes], workloads, strict=True):
        usd = [results[workload][k]["usd_per_conversation"] for k in names]
        colours = ["#9D9D9D" if not k.startswith("Tierwise") else "#4C78A8" for k in names]
        ax.barh(names, usd, color=colours)
        for y, k in enumerate(names):
            r = results[workload][k]
            ax.text(usd[y], y, f" {usd[y]:.3f} ({r['cache_read_share']:.0%} cached)", va="center", fontsize=9)
        ax.set_xlim(0, max(usd) * 1.45)
        ax.set_xlabel("provider-billed USD per conversation")
        ax.set_title(workload, fontsize=10)
    (axes[0] if len(workloads) > 1 else axes).invert_yaxis()
    fig.suptitle("The same coding-agent conversations, billed as Anthropic bills them (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def workloads(args: argparse.Namespace) -> list[Workload]:
    if args.smoke:
        return [Workload("smoke", 3, 4, 160)]
    n, turns = args.conversations, args.turns
    return [
        Workload(f"{n} conversations x {turns} turns, file reads of ~1.5k tokens", n, turns, 160),
        Workload(f"{n} conversations x {turns} turns, file reads of ~6k tokens", n, turns, 640),
        Workload(f"{n} conversations x 6 turns about a ~50k-token module pasted in first", n, 6, 160, 5200),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=50)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="3 conversations of 4 turns, Tierwise with the shipped router")
    ap.add_argument("--only-tierwise", action="store_true", help="skip direct and LiteLLM proxy")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for w in workloads(args):
        found = results[w.name] = {}
        if not args.smoke and not args.only_tierwise:
            log(f"{w.name}: direct to {TIERS['frontier']}")
            found[f"direct to the frontier ({TIERS['frontier']})"] = run_direct(w)
            if LITELLM_BIN.exists():
                log(f"{w.name}: LiteLLM proxy")
                found["LiteLLM proxy (frontier)"] = run_litellm(w, work)
            else:
                log(f"LiteLLM proxy not installed at {LITELLM_BIN} (make bench installs it): skipped")
        for i, name in enumerate(SESSIONS):
            if args.smoke and not name.endswith("shipped router"):
                continue
            log(f"{w.name}: {name}")
            found[name] = run_tierwise(name, w, work / f"tierwise-{len(results)}-{i}")
        for r in found.values():
            r["usd_per_conversation"] = r["usd"] / w.conversations
        print(f"\n{w.name}; USD as billed by the upstream at litellm's prices\n")
        print("| contender | USD / conversation | cache-read share | ledger - bill (USD) | calls by tier |")
        print("| --- | ---: | ---: | ---: | --- |")
        for name, r in found.items():
            diff = f"{r['ledger_minus_bill']:+.1e}" if "ledger_minus_bill" in r else "-"
            tiers = ", ".join(f"{k} {v}" for k, v in sorted(r.get("tiers", {}).items(), key=str)) or "-"
            print(f"| {name} | {r['usd_per_conversation']:.4f} | {r['cache_read_share']:.1%} | {diff} | {tiers} |")
    (out / "agent_cache.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "agent_cache.png")
    log(f"wrote {out / 'agent_cache.json'} and {out / 'agent_cache.png'}")
    bad = [
        f"{w}: {k}"
        for w, found in results.items()
        for k, r in found.items()
        if abs(r.get("ledger_minus_bill", 0)) > 1e-9
    ]
    if bad:
        sys.exit(f"the ledger differs from the bill for: {', '.join(bad)}")


if __name__ == "__main__":
    main()
