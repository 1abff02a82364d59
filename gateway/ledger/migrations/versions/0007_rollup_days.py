"""Latency and time-to-first-token histograms in the hourly rollups, daily rollups and their
mark (0008 counts them from the rows).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.ledger.rollups import BUCKETS, DAYS, MARKS

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    have = {c["name"] for c in sa.inspect(bind).get_columns("request_hours")}
    if missing := [c for c in BUCKETS if c not in have]:  # a table 0006 made before the histograms
        with op.batch_alter_table("request_hours") as batch:
            for name in missing:
                batch.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
    DAYS.create(bind, checkfirst=True)
    MARKS.create(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    MARKS.drop(bind, checkfirst=True)
    DAYS.drop(bind, checkfirst=True)
    with op.batch_alter_table("request_hours") as batch:
        for name in BUCKETS:
            batch.drop_column(name)
