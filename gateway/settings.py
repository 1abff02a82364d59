"""Process settings: everything that comes from the environment (URLs, ports, paths).

What to route where lives in the policy file; secrets and addresses of our own
infrastructure live here. Every variable is prefixed ``TIERWISE_``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIERWISE_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    policy_path: Path = Path("policies/default.yaml")
    database_url: str = "sqlite:///tierwise.db"
    # Where ledger rows go when the database cannot take them; replayed on recovery.
    spool_path: Path = Path("tierwise-ledger.spool.jsonl")
    policy_poll_interval_s: float = Field(default=1.0, gt=0)
    # How often loopback model servers are probed (a timeout must repeat 3 times to count).
    local_probe_interval_s: float = Field(default=5.0, gt=0)
    ledger_flush_interval_s: float = Field(default=0.2, gt=0)
    ledger_batch_size: int = Field(default=500, ge=1)
    # Load the router (sentence-transformers, ~10 s) at start; off for tests that do not route.
    load_router: bool = True
    log_level: str = "info"
    # Shared counters for budgets and rate limits across replicas; in-process when unset.
    redis_url: str | None = None
    # FastAPI's native OpenTelemetry (spans, metrics, logs through the global providers). Off by
    # default: even unconfigured it costs a provider lookup per request on the hot path.
    otel: bool = False
    # Guards /admin; never logged (SecretStr).
    master_key: SecretStr | None = None
