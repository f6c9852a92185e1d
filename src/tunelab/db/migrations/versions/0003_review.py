"""The human review app: users, sessions, projects, items, answers, adjudications, exports;
and the review status of feedback.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("review_status", sa.String(32), nullable=True))
        batch.add_column(sa.Column("review_correction", sa.Text(), nullable=True))
        batch.add_column(_when("reviewed_at", nullable=True))
    op.create_table(
        "review_user",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "review_session",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        _when("created_at"),
        _when("expires_at"),
    )
    op.create_table(
        "review_login_failure",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        _when("failed_at"),
    )
    op.create_index("ix_review_login_failure_name", "review_login_failure", ["name", "failed_at"])
    op.create_table(
        "review_project",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("label_schema", sa.Text(), nullable=False),
        sa.Column("reviews_per_item", sa.Integer(), nullable=False),
        sa.Column("guideline_version", sa.Integer(), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "review_guideline",
        sa.Column("project_id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "review_item",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_ref", sa.String(500), nullable=False),
        sa.Column("shown", sa.Text(), nullable=False),
        sa.Column("hidden", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        _when("created_at"),
        _when("completed_at", nullable=True),
        sa.UniqueConstraint("project_id", "source_ref", name="uq_review_item_ref"),
    )
    op.create_index("ix_review_item_status", "review_item", ["project_id", "status"])
    op.create_table(
        "review_assignment",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        _when("assigned_at"),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("guideline_version", sa.Integer(), nullable=True),
        _when("answered_at", nullable=True),
        sa.UniqueConstraint("item_id", "user_id", name="uq_review_assignment_user"),
        sa.UniqueConstraint("item_id", "slot", name="uq_review_assignment_slot"),
    )
    op.create_index("ix_review_assignment_user", "review_assignment", ["user_id", "answered_at"])
    op.create_table(
        "review_adjudication",
        sa.Column("item_id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("answers", sa.Text(), nullable=False),
        sa.Column("guideline_version", sa.Integer(), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "review_export",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("provenance", sa.Text(), nullable=False),
        _when("created_at"),
    )


def downgrade() -> None:
    for table in ("review_export", "review_adjudication"):
        op.drop_table(table)
    op.drop_index("ix_review_assignment_user", table_name="review_assignment")
    op.drop_table("review_assignment")
    op.drop_index("ix_review_item_status", table_name="review_item")
    op.drop_table("review_item")
    for table in ("review_guideline", "review_project"):
        op.drop_table(table)
    op.drop_index("ix_review_login_failure_name", table_name="review_login_failure")
    op.drop_table("review_login_failure")
    for table in ("review_session", "review_user"):
        op.drop_table(table)
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("reviewed_at")
        batch.drop_column("review_correction")
        batch.drop_column("review_status")
