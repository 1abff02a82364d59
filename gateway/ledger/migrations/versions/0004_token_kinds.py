"""Tokens by the kind each is billed as: cache reads, cache writes (1-hour ones apart), reasoning.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NAMES = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("requests")}
    with op.batch_alter_table("requests") as batch:
        for name in _NAMES:
            if name not in have:
                batch.add_column(sa.Column(name, sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        for name in reversed(_NAMES):
            batch.drop_column(name)
