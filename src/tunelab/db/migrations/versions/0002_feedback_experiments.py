"""Feedback on responses, experiment assignments, and the variant in the request log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("experiment", sa.String(200), nullable=True))
        batch.add_column(sa.Column("variant", sa.String(200), nullable=True))
    op.create_index("ix_request_log_request_id", "request_log", ["request_id"])
    op.create_index("ix_request_log_experiment", "request_log", ["experiment", "variant"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("response_id", sa.String(100), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(100), nullable=True),
        sa.Column("rating", sa.String(32), nullable=True),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("response_id", "user", name="uq_feedback_response_user"),
        sa.UniqueConstraint("idempotency_key", name="uq_feedback_idempotency_key"),
    )
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])
    op.create_table(
        "experiment_assignment",
        sa.Column("experiment", sa.String(200), primary_key=True),
        sa.Column("unit", sa.String(200), primary_key=True),
        sa.Column("variant", sa.String(200), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiment_assignment")
    op.drop_index("ix_feedback_created_at", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_request_log_experiment", table_name="request_log")
    op.drop_index("ix_request_log_request_id", table_name="request_log")
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("variant")
        batch.drop_column("experiment")
