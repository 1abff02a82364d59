"""Hourly rollups of the ledger (gateway/ledger/rollups.py); 0007 counts them from the rows.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

from gateway.ledger.rollups import HOURS

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    HOURS.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    HOURS.drop(op.get_bind(), checkfirst=True)
