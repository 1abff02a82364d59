"""Create, list, update, revoke and look up virtual keys in the ledger's database."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from gateway.clock import Clock, SystemClock
from gateway.keys.models import ApiKey, hash_key, new_key

__all__ = ["Identity", "KeyStore"]

log = logging.getLogger("tierwise.keys")


@dataclass(frozen=True)
class Identity:
    """What a request's key allows; no key material in it."""

    key_id: str
    owner: str
    team: str
    allowed_routes: frozenset[str] | None
    allowed_tiers: frozenset[str] | None
    budget_daily_usd: float | None
    budget_monthly_usd: float | None
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> Identity:
        return cls(
            key_id=row.id,
            owner=row.owner,
            team=row.team,
            allowed_routes=frozenset(json.loads(row.allowed_routes)) if row.allowed_routes else None,
            allowed_tiers=frozenset(json.loads(row.allowed_tiers)) if row.allowed_tiers else None,
            budget_daily_usd=row.budget_daily_usd,
            budget_monthly_usd=row.budget_monthly_usd,
            rpm_limit=row.rpm_limit,
            tpm_limit=row.tpm_limit,
            expires_at=row.expires_at,
        )


def public(row: ApiKey) -> dict[str, Any]:
    """A key as the admin API shows it: everything but the hash."""
    out = row.model_dump(exclude={"key_hash", "metadata_json", "allowed_routes", "allowed_tiers"})
    out["metadata"] = json.loads(row.metadata_json) if row.metadata_json else {}
    out["allowed_routes"] = json.loads(row.allowed_routes) if row.allowed_routes else None
    out["allowed_tiers"] = json.loads(row.allowed_tiers) if row.allowed_tiers else None
    for k in ("created_at", "revoked_at", "expires_at"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat()
    return out


class KeyStore:
    """Lookups are cached briefly (``ttl_s``): a revocation reaches other replicas within that time."""

    def __init__(self, engine: Engine, ttl_s: float = 2.0, clock: Clock | None = None) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock or SystemClock()
        self._cache: dict[str, tuple[float, Identity | None]] = {}
        self._any: tuple[float, bool] = (0.0, False)

    def create(self, **fields: Any) -> tuple[str, dict[str, Any]]:
        key = new_key()
        row = ApiKey(
            id="key_" + secrets.token_hex(8),
            key_hash=hash_key(key),
            key_hint=key[:6] + "…" + key[-4:],
            **_encode(fields),
        )
        with Session(self.engine) as s:
            s.add(row)
            s.commit()
            s.refresh(row)
            self._any = (self.clock.monotonic(), True)
            return key, public(row)

    def list(self) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            return [public(r) for r in s.exec(select(ApiKey).order_by(ApiKey.created_at)).scalars()]  # type: ignore[call-overload, arg-type]

    def update(self, key_id: str, **fields: Any) -> dict[str, Any] | None:
        with Session(self.engine) as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                return None
            for k, v in _encode(fields).items():
                setattr(row, k, v)
            s.add(row)
            s.commit()
            s.refresh(row)
            self._cache.clear()
            return public(row)

    def revoke(self, key_id: str) -> bool:
        with Session(self.engine) as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                return False
            row.revoked_at = datetime.now(UTC)
            s.add(row)
            s.commit()
        self._cache.clear()
        return True

    def cached_any_keys(self) -> bool | None:
        """The cached answer, or None when it must be asked of the database (no I/O here)."""
        at, value = self._any
        return value if value or self.clock.monotonic() - at < self.ttl_s else None

    def cached_lookup(self, key: str) -> tuple[bool, Identity | None]:
        """(hit, identity) from the cache only (no I/O here)."""
        hit = self._cache.get(hash_key(key))
        if hit is not None and self.clock.monotonic() - hit[0] < self.ttl_s:
            return True, hit[1]
        return False, None

    def last_any_keys(self) -> bool:
        """The last known answer, however old (keys are rarely added; used while the database is down)."""
        return self._any[1]

    def stale_lookup(self, key: str) -> tuple[bool, Identity | None]:
        """(known, identity) from the cache, however old: better than refusing a known key while the
        database is down; a key last seen revoked or unknown is known as such (identity None)."""
        hit = self._cache.get(hash_key(key))
        return (True, hit[1]) if hit is not None else (False, None)

    def exists(self, key_id: str) -> bool:
        with Session(self.engine) as s:
            return s.get(ApiKey, key_id) is not None

    def ping(self) -> None:
        """Raises unless the database answers."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def any_keys(self) -> bool:
        cached = self.cached_any_keys()
        if cached is not None:
            return cached
        try:
            with self.engine.connect() as conn:
                value = bool(conn.execute(select(func.count()).select_from(ApiKey)).scalar())
        except SQLAlchemyError:
            # The database is down: keep the last known answer (keys are rarely added) and retry later.
            log.warning("key store unreachable; keeping the last known key configuration")
            value = self._any[1]
        self._any = (self.clock.monotonic(), value)
        return value

    def lookup(self, key: str) -> Identity | None:
        digest = hash_key(key)
        hit = self._cache.get(digest)
        if hit is not None and self.clock.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        try:
            with Session(self.engine) as s:
                row = s.exec(select(ApiKey).where(ApiKey.key_hash == digest)).scalars().first()  # type: ignore[call-overload, arg-type]
        except SQLAlchemyError:
            if hit is not None:  # the database is down: a stale answer beats refusing a known key
                return hit[1]
            raise
        identity = None
        # constant-time comparison of the stored hash, on top of the indexed lookup
        if row is not None and hmac.compare_digest(row.key_hash, digest) and row.revoked_at is None:
            identity = Identity.of(row)
        self._cache[digest] = (self.clock.monotonic(), identity)
        return identity


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    for k in ("allowed_routes", "allowed_tiers"):
        if k in out:
            out[k] = json.dumps(sorted(out[k])) if out[k] is not None else None
    if "metadata" in out:
        out["metadata_json"] = json.dumps(out.pop("metadata") or {})
    return out
