"""The ledger (requests) and virtual keys (api_keys).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _exists(name: str) -> bool:
    # Databases created before migrations existed (create_all) already have the tables.
    return name in sa.inspect(op.get_bind()).get_table_names()


def upgrade() -> None:
    if not _exists("requests"):
        op.create_table(
            "requests",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("request_id", sa.String(64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("api_key_id", sa.String(64)),
            sa.Column("route", sa.String(128)),
            sa.Column("requested_model", sa.String(256), nullable=False),
            sa.Column("tier", sa.String(64)),
            sa.Column("deployment", sa.String(128)),
            sa.Column("upstream_model", sa.String(256)),
            sa.Column("router_tier", sa.String(64)),
            sa.Column("router_scores", sa.String),
            sa.Column("router_version", sa.String(128)),
            sa.Column("prompt_tokens", sa.Integer, nullable=False),
            sa.Column("completion_tokens", sa.Integer, nullable=False),
            sa.Column("usage_estimated", sa.Boolean, nullable=False),
            sa.Column("cost_usd", sa.Float, nullable=False),
            sa.Column("frontier_cost_usd", sa.Float, nullable=False),
            sa.Column("ttft_ms", sa.Float),
            sa.Column("latency_ms", sa.Float, nullable=False),
            sa.Column("status_code", sa.Integer, nullable=False),
            sa.Column("stream", sa.Boolean, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("fallbacks", sa.String),
            sa.Column("error_type", sa.String(64)),
        )
        op.create_index("ix_requests_request_id", "requests", ["request_id"], unique=True)
        op.create_index("ix_requests_created_at", "requests", ["created_at"])
        op.create_index("ix_requests_api_key_id", "requests", ["api_key_id"])
        op.create_index("ix_requests_route", "requests", ["route"])
        op.create_index("ix_requests_tier", "requests", ["tier"])
    if not _exists("api_keys"):
        op.create_table(
            "api_keys",
            sa.Column("id", sa.String(40), primary_key=True),
            sa.Column("key_hash", sa.String(64), nullable=False),
            sa.Column("key_hint", sa.String(16), nullable=False),
            sa.Column("owner", sa.String(200), nullable=False),
            sa.Column("team", sa.String(200), nullable=False),
            sa.Column("allowed_routes", sa.String),
            sa.Column("allowed_tiers", sa.String),
            sa.Column("budget_daily_usd", sa.Float),
            sa.Column("budget_monthly_usd", sa.Float),
            sa.Column("rpm_limit", sa.Integer),
            sa.Column("tpm_limit", sa.Integer),
            sa.Column("expires_at", sa.DateTime(timezone=True)),
            sa.Column("metadata_json", sa.String),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True)),
        )
        op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("requests")
