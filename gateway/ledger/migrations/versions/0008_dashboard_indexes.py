"""What the dashboard's per-request and quality reads need: the ledger by cost (the most expensive
requests), the few rows with failed checks or escalation steps by time, feedback by time, and the
rollups of those signals, of the quality calls, judged samples and feedback
(gateway/ledger/signal_rollups.py); then every rollup is counted from the rows (hours whose rows
retention deleted keep theirs).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.ledger.rollups import PENDING, rebuild
from gateway.ledger.signal_rollups import CHECKS, FEEDBACK, JUDGED, QUALITY, STEPS

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SPARSE = {"ix_requests_checks": "checks", "ix_requests_steps": "steps"}


def upgrade() -> None:
    bind = op.get_bind()
    found = sa.inspect(bind)
    have = {i["name"] for table in ("requests", "feedback") for i in found.get_indexes(table)}
    if "ix_requests_cost_usd" not in have:  # a ledger from before migrations (create_all) has them
        op.create_index("ix_requests_cost_usd", "requests", ["cost_usd"])
    for name, column in _SPARSE.items():
        where = sa.text(f"{column} IS NOT NULL")
        if name not in have:
            op.create_index(name, "requests", ["created_at"], sqlite_where=where, postgresql_where=where)
    if "ix_feedback_created_at" not in have:
        op.create_index("ix_feedback_created_at", "feedback", ["created_at"])
    for table in (CHECKS, STEPS, QUALITY, JUDGED, FEEDBACK):
        table.create(bind, checkfirst=True)
    PENDING.create(bind, checkfirst=True)  # 0009's table: today's rebuild clears it
    rebuild(bind)


def downgrade() -> None:
    for table in (CHECKS, STEPS, QUALITY, JUDGED, FEEDBACK):
        table.drop(op.get_bind(), checkfirst=True)
    op.drop_index("ix_feedback_created_at", "feedback")
    for name in _SPARSE:
        op.drop_index(name, "requests")
    op.drop_index("ix_requests_cost_usd", "requests")
