"""Feedback, judged samples and policy snapshots.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _missing(name: str) -> bool:
    return name not in sa.inspect(op.get_bind()).get_table_names()


def upgrade() -> None:
    now = sa.DateTime(timezone=True)
    if _missing("feedback"):
        op.create_table(
            "feedback",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("request_id", sa.String(64), nullable=False),
            sa.Column("source", sa.String(64), nullable=False),
            sa.Column("score", sa.Float, nullable=False),
            sa.Column("comment", sa.String(2000)),
            sa.Column("created_at", now, nullable=False),
            sa.Column("updated_at", now, nullable=False),
            sa.UniqueConstraint("request_id", "source", name="uq_feedback_request_source"),
        )
        op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    if _missing("judgements"):
        op.create_table(
            "judgements",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("request_id", sa.String(64), nullable=False),
            sa.Column("created_at", now, nullable=False),
            sa.Column("served_tier", sa.String(64), nullable=False),
            sa.Column("shadow_tier", sa.String(64), nullable=False),
            sa.Column("cheaper_tier", sa.String(64), nullable=False),
            sa.Column("reference_tier", sa.String(64), nullable=False),
            sa.Column("verdict", sa.String(16), nullable=False),
            sa.Column("adequacy", sa.Float),
            sa.Column("verdicts", sa.String),
            sa.Column("judge", sa.String(128), nullable=False),
            sa.Column("sample_rate", sa.Float, nullable=False),
            sa.Column("router_version", sa.String(128)),
            sa.Column("router_tier", sa.String(64)),
            sa.Column("predicted", sa.String),
            sa.Column("encoder", sa.String(64)),
            sa.Column("embedding", sa.LargeBinary),
            sa.Column("prompt_chars", sa.Integer, nullable=False),
            sa.Column("prompt_tokens", sa.Integer, nullable=False),
            sa.Column("served_tokens", sa.Integer, nullable=False),
            sa.Column("shadow_tokens", sa.Integer, nullable=False),
            sa.Column("served_cost_usd", sa.Float, nullable=False),
            sa.Column("shadow_cost_usd", sa.Float, nullable=False),
            sa.Column("prompt_text", sa.String),
            sa.Column("served_text", sa.String),
            sa.Column("shadow_text", sa.String),
        )
        op.create_index("ix_judgements_request_id", "judgements", ["request_id"], unique=True)
        op.create_index("ix_judgements_created_at", "judgements", ["created_at"])
        op.create_index("ix_judgements_cheaper_tier", "judgements", ["cheaper_tier"])
    if _missing("policy_snapshots"):
        op.create_table(
            "policy_snapshots",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("created_at", now, nullable=False),
            sa.Column("path", sa.String(1024), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("content", sa.String, nullable=False),
        )
        op.create_index("ix_policy_snapshots_created_at", "policy_snapshots", ["created_at"])


def downgrade() -> None:
    for table in ("policy_snapshots", "judgements", "feedback"):
        op.drop_table(table)
