"""Which API a request came through, its conversation, why it was made, and what was checked.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


_COLUMNS = [
    sa.Column("api", sa.String(16), nullable=False, server_default="chat"),
    sa.Column("purpose", sa.String(16), nullable=False, server_default="client"),
    sa.Column("parent_request_id", sa.String(64)),
    sa.Column("session_id", sa.String(128)),
    sa.Column("checks", sa.String),
    sa.Column("steps", sa.String),
    sa.Column("confidence", sa.Float),
]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    # A database made by create_all from a newer model (before migrations existed) may have them.
    have = {c["name"] for c in inspector.get_columns("requests")}
    indexes = {i["name"] for i in inspector.get_indexes("requests")}
    with op.batch_alter_table("requests") as batch:
        for column in _COLUMNS:
            if column.name not in have:
                batch.add_column(column)
    for name in ("session_id", "parent_request_id"):
        if f"ix_requests_{name}" not in indexes:
            op.create_index(f"ix_requests_{name}", "requests", [name])


def downgrade() -> None:
    op.drop_index("ix_requests_parent_request_id", "requests")
    op.drop_index("ix_requests_session_id", "requests")
    with op.batch_alter_table("requests") as batch:
        for name in ("confidence", "steps", "checks", "session_id", "parent_request_id", "purpose", "api"):
            batch.drop_column(name)
