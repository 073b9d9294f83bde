"""Alembic environment: castbook passes its own connection in ``config.attributes``."""

from alembic import context

from castbook.db.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
