"""PACS jobs and watcher state

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pacs_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_by", sa.String(64)),
        sa.Column("locked_at", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text()),
        sa.Column("decision", sa.String(64)),
        sa.Column("probability", sa.Float()),
        sa.Column("sr_instance_uid", sa.String(64)),
        sa.Column("sc_instance_uid", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("sop_instance_uid", "model_sha256", name="uq_pacs_jobs_instance_model"),
    )
    op.create_index("ix_pacs_jobs_study_instance_uid", "pacs_jobs", ["study_instance_uid"])
    op.create_index("ix_pacs_jobs_status", "pacs_jobs", ["status"])
    op.create_table(
        "pacs_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pacs_state")
    op.drop_index("ix_pacs_jobs_status", "pacs_jobs")
    op.drop_index("ix_pacs_jobs_study_instance_uid", "pacs_jobs")
    op.drop_table("pacs_jobs")
