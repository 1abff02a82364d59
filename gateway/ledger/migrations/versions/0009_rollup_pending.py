"""Rollup sums staged by the ledger writer with each batch of rows, merged into the rollups every
few seconds (gateway/ledger/rollups.py: stage, merge).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

from gateway.ledger.rollups import PENDING, merge

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    PENDING.create(bind, checkfirst=True)  # 0008 made it when it ran after this code
    if bind.dialect.name == "postgresql":  # written once, read once, within seconds: not worth compressing
        op.execute(f"ALTER TABLE {PENDING.name} ALTER COLUMN sums SET STORAGE EXTERNAL")


def downgrade() -> None:
    # Staged sums are counted nowhere else: the rollups take them before the table goes.
    bind = op.get_bind()
    while merge(bind):
        pass
    PENDING.drop(bind, checkfirst=True)
