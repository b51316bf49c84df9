"""generic metrics: ``jobs.metric_names`` (the algorithm's declared headline metrics, JSON) and
``evaluations.summary`` (the report's headline numbers, JSON) in place of the RL-only columns
``return_pre``, ``return_post`` and ``success_post``, whose values move into ``summary``.

Existing jobs keep ``metric_names`` NULL (the service derives it from the stored spec); every
evaluation's numbers are copied, and a downgrade copies them back.

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

#: the columns 0001 created, in the order they are copied
RL_COLUMNS = ("return_pre", "return_post", "success_post")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("metric_names", sa.Text, nullable=True))
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("summary", sa.Text, nullable=True))
    old = sa.table("evaluations", sa.column("id", sa.String), sa.column("summary", sa.Text),
                   *(sa.column(c, sa.Float) for c in RL_COLUMNS))
    conn = op.get_bind()
    rows = conn.execute(sa.select(old.c.id, *(old.c[c] for c in RL_COLUMNS))).all()
    for row in rows:
        summary = {c: float(v) for c, v in zip(RL_COLUMNS, row[1:], strict=True) if v is not None}
        if summary:
            conn.execute(sa.update(old).where(old.c.id == row[0]).values(summary=json.dumps(summary)))
    with op.batch_alter_table("evaluations") as batch:
        for c in RL_COLUMNS:
            batch.drop_column(c)


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        for c in RL_COLUMNS:
            batch.add_column(sa.Column(c, sa.Float, nullable=True))
    new = sa.table("evaluations", sa.column("id", sa.String), sa.column("summary", sa.Text),
                   *(sa.column(c, sa.Float) for c in RL_COLUMNS))
    conn = op.get_bind()
    for eval_id, text in conn.execute(sa.select(new.c.id, new.c.summary).where(new.c.summary.is_not(None))).all():
        summary = json.loads(text)
        values = {c: summary[c] for c in RL_COLUMNS if isinstance(summary.get(c), int | float)}
        if values:
            conn.execute(sa.update(new).where(new.c.id == eval_id).values(**values))
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("summary")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("metric_names")
