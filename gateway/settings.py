"""Process settings: the one reader of the environment (URLs, ports, paths, secrets).

What to route where lives in the policy file; secrets and addresses of our own
infrastructure live here. Every variable is prefixed ``TIERWISE_``; provider keys are read
by the name a policy gives (``api_key_env``), through :meth:`Settings.credential`.
Relative paths are resolved against the working directory once, here, so every process (the
gateway, its workers, the dashboard) means the same file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from router.offline import offline

__all__ = ["REPO_ROOT", "LocalModelSettings", "Settings", "offline_environment"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def offline_environment() -> None:
    """Libraries that would otherwise reach for the network at import or first use: litellm's
    price map and Anthropic beta-header table (it fetches newer ones) and Hugging Face's hub.
    Nothing is downloaded at run time."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
    offline()


class LocalModelSettings(BaseSettings):
    """The bundled local model server (llama.cpp); ``TIERWISE_LOCAL_*``."""

    model_config = SettingsConfigDict(env_prefix="TIERWISE_LOCAL_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    # A GGUF file; the bundled SmolLM2-135M-Instruct when unset.
    model_path: Path | None = None
    threads: int = Field(default_factory=lambda: min(2, os.cpu_count() or 2), ge=1)
    ctx: int = Field(default=2048, ge=256)
    # How often loopback model servers are probed (a timeout must repeat 3 times to count).
    probe_interval_s: float = Field(default=5.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIERWISE_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    policy_path: Path = REPO_ROOT / "policies" / "default.yaml"
    database_url: str = "sqlite:///tierwise.db"
    # The ledger journal: rows are appended here before their response is sent, and wait here
    # while the database is down (replayed in order, also after a crash).
    spool_dir: Path = Path("tierwise-spool")
    policy_poll_interval_s: float = Field(default=1.0, gt=0)
    ledger_flush_interval_s: float = Field(default=0.2, gt=0)
    # Rows a ledger transaction takes when the writer falls behind (a quiet gateway's batches are
    # what arrived in the flush interval): bigger ones fold to fewer rollup groups a row.
    ledger_batch_size: int = Field(default=2_000, ge=1)
    # The writer stages each batch's rollup sums with its rows and adds them to the rollups (what
    # the dashboard's figures read) this often: its charts lag the rows by up to this.
    ledger_merge_interval_s: float = Field(default=5.0, ge=0)
    # Raw ledger rows older than this many days are deleted (hourly); the hourly rollups the
    # dashboard's figures read stay. Unset: every row is kept.
    ledger_retention_days: float | None = Field(default=None, gt=0)
    # Load the router at start; off for tests and `serve --no-router` (auto routes use their tier).
    load_router: bool = True
    log_level: str = "info"
    # Shared counters for budgets and rate limits across replicas; in-process when unset.
    redis_url: str | None = None
    # FastAPI's native OpenTelemetry (spans, metrics, logs through the global providers). Off by
    # default: even unconfigured it costs a provider lookup per request on the hot path.
    otel: bool = False
    # An OTLP/HTTP collector (e.g. http://otel-collector:4318): the gateway's own spans, in the
    # GenAI semantic conventions (gateway/tracing.py), go there. Unset: no spans are made.
    otel_endpoint: str | None = None
    # The share of requests traced there (by trace id, each with all its spans): a traced request
    # costs about as much CPU again as an untraced one.
    otel_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # Guards /admin; never logged (SecretStr).
    master_key: SecretStr | None = None
    # Browser origins (scheme://host[:port]) allowed to call the gateway; requests carrying any
    # other Origin header are refused. A JSON list, e.g. '["https://app.example.com"]'.
    allowed_origins: list[str] = Field(default_factory=list)
    # A scraper's token for GET /metrics (the master key also works there).
    metrics_token: SecretStr | None = None
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)

    @field_validator("policy_path", "spool_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @field_validator("database_url")
    @classmethod
    def _absolute_sqlite(cls, url: str) -> str:
        """``sqlite:///relative.db`` names a file in the working directory: make it absolute."""
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(Path(url.removeprefix(prefix)).resolve())
        return url

    @property
    def sqlite_file(self) -> Path | None:
        """The ledger's file when the ledger is SQLite."""
        prefix = "sqlite:///"
        return Path(self.database_url.removeprefix(prefix)) if self.database_url.startswith(prefix) else None

    @staticmethod
    def credential(env_name: str) -> str | None:
        """A provider key by the environment variable name a policy gives; never logged."""
        return os.environ.get(env_name) or None
