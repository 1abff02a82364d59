"""Hourly rollups of the ledger (gateway/ledger/rollups.py), counted from the rows already there.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

from gateway.ledger.rollups import HOURS, rebuild

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    HOURS.create(bind, checkfirst=True)
    rebuild(bind)


def downgrade() -> None:
    HOURS.drop(op.get_bind(), checkfirst=True)
