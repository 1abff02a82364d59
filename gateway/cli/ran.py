"""What the offline commands (``policy replay``, ``router adapt --from-ledger``) read: the ledger
the gateway wrote, never one created in passing, and the policy the gateway ran, as it recorded it
there, unless ``--policy`` names another."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.ledger import read_engine
from gateway.quality.snapshots import latest_snapshot
from gateway.settings import Settings

__all__ = ["ledger_and_policy"]


def ledger_and_policy(settings: Settings, given: str | None) -> tuple[Engine, Path, str]:
    """The ledger (raises ``NoLedger``), the policy file to read and a line saying which: ``given``,
    else the one the gateway last recorded running (if that file is still there), else
    ``TIERWISE_POLICY_PATH``."""
    engine = read_engine(settings.database_url)
    if given is not None:
        return engine, Path(given), f"policy: {given} (--policy)"
    try:
        snapshot = latest_snapshot(engine)
    except SQLAlchemyError:  # a ledger from before snapshots were recorded
        snapshot = None
    if snapshot is not None and Path(snapshot.path).is_file():
        return engine, Path(snapshot.path), f"policy: {snapshot.path} (the one the gateway recorded running)"
    why = f"the recorded {snapshot.path} is gone" if snapshot is not None else "the ledger records no policy"
    return engine, settings.policy_path, f"policy: {settings.policy_path} (TIERWISE_POLICY_PATH; {why})"
