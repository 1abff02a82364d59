"""The policy a gateway runs, recorded in the database at start and on every reload, so the
dashboard shows what is in force rather than whatever file it finds."""

from __future__ import annotations

import hashlib
import logging

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.policy.loader import LoadedPolicy
from gateway.quality.models import PolicySnapshot

__all__ = ["latest_snapshot", "record_snapshot"]

_TABLE = PolicySnapshot.__table__  # type: ignore[attr-defined]
log = logging.getLogger("tierwise.policy")


def record_snapshot(engine: Engine, loaded: LoadedPolicy) -> None:
    """Insert the policy unless it is the latest one recorded already (replicas start together).
    A database that is away only costs the dashboard its view of the policy: logged, not raised."""
    digest = hashlib.sha256(loaded.text.encode()).hexdigest()
    try:
        latest = latest_snapshot(engine)
        if latest is not None and latest.sha256 == digest and latest.path == str(loaded.source):
            return
        with engine.begin() as conn:
            conn.execute(insert(_TABLE).values(path=str(loaded.source.resolve()), sha256=digest, content=loaded.text))
    except SQLAlchemyError as exc:
        log.warning("could not record the policy snapshot (%s)", type(exc).__name__)


def latest_snapshot(engine: Engine) -> PolicySnapshot | None:
    with engine.connect() as conn:
        row = conn.execute(select(_TABLE).order_by(_TABLE.c.id.desc()).limit(1)).first()
    return PolicySnapshot.model_validate(dict(row._mapping)) if row is not None else None
