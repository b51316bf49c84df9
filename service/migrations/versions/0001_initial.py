"""initial: api keys, jobs, evaluations

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean, nullable=False, default=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("message", sa.Text),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("submission_id", sa.String(64), nullable=False, unique=True),
        sa.Column("run_id", sa.String(64)),
        sa.Column("iteration", sa.Integer, nullable=False),
        sa.Column("iterations", sa.Integer, nullable=False),
        sa.Column("rollout_workers", sa.Integer, nullable=False),
        sa.Column("model_name", sa.String(100)),
        sa.Column("model_version", sa.String(16)),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency"),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(16), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("message", sa.Text),
        sa.Column("submission_id", sa.String(64), nullable=False, unique=True),
        sa.Column("run_id", sa.String(64)),
        sa.Column("result", sa.Text),
        sa.Column("return_pre", sa.Float),
        sa.Column("return_post", sa.Float),
        sa.Column("success_post", sa.Float),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
    op.drop_table("jobs")
    op.drop_table("api_keys")
