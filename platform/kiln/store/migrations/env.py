"""Alembic's entry point: runs migrations on the connection ``kiln.store.db.migrate`` hands over."""

from alembic import context

from kiln.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
)
with context.begin_transaction():
    context.run_migrations()
