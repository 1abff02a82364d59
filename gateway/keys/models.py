"""Virtual keys: stored only as a SHA-256 hash; the key itself is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlmodel import Field, SQLModel

__all__ = ["KEY_PREFIX", "ApiKey", "hash_key", "new_key"]

KEY_PREFIX = "sk-tw-"


def _now() -> datetime:
    return datetime.now(UTC)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # Keys are 256 random bits: a fast hash is enough (nothing to brute-force), and lookups stay cheap.
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    key_hash: str = Field(index=True, unique=True, max_length=64)
    key_hint: str = Field(max_length=16)  # "sk-tw-…abcd", to recognise a key without revealing it
    owner: str = Field(default="", max_length=200)
    team: str = Field(default="", max_length=200)
    allowed_routes: str | None = None  # JSON list of route/tier/deployment names; None = all
    allowed_tiers: str | None = None  # JSON list of tier names; None = all
    budget_daily_usd: float | None = None
    budget_monthly_usd: float | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    expires_at: datetime | None = None
    metadata_json: str | None = None
    created_at: datetime = Field(default_factory=_now)
    revoked_at: datetime | None = None
