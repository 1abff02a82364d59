"""Each gateway, started as a plain pass-through to the mock upstream: Tierwise (through its CLI),
LiteLLM proxy (pinned, in bench/.venv-litellm) and Portkey's open-source gateway (pinned, in
bench/portkey/node_modules). `make bench` installs both peers."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from measure import HERE, PY, REPO, Target, free_port, process, settled

LITELLM_BIN = HERE / ".venv-litellm" / "bin" / "litellm"
PORTKEY_DIR = HERE / "portkey"
PORTKEY_MAIN = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def tierwise_policy(mock: str, path: Path, judged: bool = False) -> None:
    """Three tiers on the mock; ``judged``: the quality loop on, as a user would start it (5% of
    requests answered again by another tier and judged in both orders by the frontier)."""
    quality = "quality: {sample_rate: 0.05, judge: bench-frontier}\n" if judged else ""
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
        + quality
    )


@contextmanager
def tierwise(
    mock: str,
    workdir: Path,
    workers: int = 1,
    redis_url: str | None = None,
    judged: bool = False,
    checkout: Path = REPO,
    under: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Target]:
    """`tierwise serve` on a fresh SQLite ledger and journal. With redis_url it runs as production
    would: limits shared in Redis, and requests carry a virtual key with a rate limit and a
    budget, so every request checks and settles them there. ``checkout``: the source tree to run
    (another revision's worktree, for bench/ab.py). ``under``: a command to run the server under
    (valgrind, for bench/ab.py --instructions); ``extra_env``: more settings (bench/ab.py --otel). The router is not loaded then (it would take
    minutes, and the pinned route does not use it), and work on a timer happens on counts
    instead (ledger rows written 500 at a time, no policy polls or health probes): a slower
    process would otherwise do more of it per request."""
    workdir.mkdir(parents=True, exist_ok=True)
    tierwise_policy(mock, workdir / "policy.yaml", judged)
    port = free_port()
    database_url = f"sqlite:///{workdir / 'ledger.db'}"
    # Migrated before the server starts: workers starting together on a fresh SQLite file race to
    # migrate it, and the loser exits and stops the whole server (seen with --workers 2).
    migrate = "import sys; from gateway.ledger.db import create_schema, make_engine as m; create_schema(m(sys.argv[1]))"
    subprocess.run([PY, "-c", migrate, database_url], cwd=checkout, check=True)
    env = {
        "TIERWISE_DATABASE_URL": database_url,
        "TIERWISE_SPOOL_DIR": str(workdir / "journal"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    master = "sk-bench-master-" + secrets.token_hex(8)
    if redis_url:
        env |= {"TIERWISE_REDIS_URL": redis_url, "TIERWISE_MASTER_KEY": master}
    env |= extra_env or {}
    if under:
        env["TIERWISE_LOAD_ROUTER"] = "false"
        for timer in ("LEDGER_FLUSH_INTERVAL_S", "POLICY_POLL_INTERVAL_S", "LOCAL_PROBE_INTERVAL_S"):
            env["TIERWISE_" + timer] = "3600"
    cmd = [*under, PY, "-m", "gateway.cli", "serve", "--policy", str(workdir / "policy.yaml"), "--port", str(port)]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    with process(cmd, base + "/readyz", env=env, timeout_s=600 if under else 120, cwd=checkout) as proc:
        key = "sk-bench"
        if redis_url:
            r = httpx.post(
                base + "/admin/keys",
                headers={"authorization": f"Bearer {master}"},
                json={"owner": "bench", "rpm_limit": 10**9, "budget_daily_usd": 10**6, "budget_monthly_usd": 10**7},
            )
            r.raise_for_status()
            key = r.json()["key"]
        # the first worker to start answers /readyz; the others may still be loading the router
        yield Target(base + "/v1/chat/completions", "mock", settled(proc.pid), key=key)


def litellm_installed() -> bool:
    return LITELLM_BIN.exists()


@contextmanager
def litellm(mock: str, workdir: Path) -> Iterator[Target]:
    """LiteLLM proxy, one worker, a config mapping `mock` to the mock, no database, master key set."""
    config = workdir / "litellm.yaml"
    config.write_text(
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
    port = free_port()
    env = {"LITELLM_MASTER_KEY": "sk-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    cmd = [str(LITELLM_BIN), "--config", str(config), "--port", str(port), "--num_workers", "1"]
    with process(cmd, f"http://127.0.0.1:{port}/health/liveliness", env=env, timeout_s=180) as proc:
        yield Target(f"http://127.0.0.1:{port}/v1/chat/completions", "mock", settled(proc.pid))


def portkey_installed() -> bool:
    return PORTKEY_MAIN.exists()


@contextmanager
def portkey(mock: str) -> Iterator[Target]:
    """Portkey's gateway on Node, one process, headless (no UI or log stream), no config file:
    its documented request headers pick the provider and point it at the mock; the bearer token
    is passed upstream as the provider key."""
    port = free_port()
    cmd = ["node", str(PORTKEY_MAIN), f"--port={port}", "--headless"]
    with process(cmd, f"http://127.0.0.1:{port}/", env={"NODE_ENV": "production"}, cwd=PORTKEY_DIR) as proc:
        headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{mock}/v1"}
        yield Target(f"http://127.0.0.1:{port}/v1/chat/completions", "mock", settled(proc.pid), headers=headers)
