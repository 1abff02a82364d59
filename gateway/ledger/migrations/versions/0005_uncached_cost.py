"""What each request would have cost without prompt caching, for "what caching saved".

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("requests")}
    if "uncached_cost_usd" not in have:
        with op.batch_alter_table("requests") as batch:
            batch.add_column(sa.Column("uncached_cost_usd", sa.Float, nullable=True))
    # Exact for earlier rows that neither read nor wrote a cache; the others' stays unknown (NULL),
    # and "what caching saved" leaves them out.
    op.execute(
        sa.text(
            "UPDATE requests SET uncached_cost_usd = cost_usd "
            "WHERE uncached_cost_usd IS NULL AND cache_read_tokens = 0 AND cache_write_tokens = 0"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("uncached_cost_usd")
