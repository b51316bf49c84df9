"""jobs.latest_metrics: a job's latest metrics kept in the job store (a finished job's are final,
so showing it needs no MLflow round trip).  Existing rows get NULL and are filled on first read.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("latest_metrics", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("latest_metrics")
