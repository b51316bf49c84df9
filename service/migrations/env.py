"""Alembic environment: runs on the connection handed over by :func:`service.db.migrate`."""

from alembic import context

from service.db import Base

target_metadata = Base.metadata
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
