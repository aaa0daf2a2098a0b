"""Alembic environment: runs migrations on the connection the service hands it.

``storage.db.upgrade`` opens the connection (SQLite or PostgreSQL, async) and runs
Alembic synchronously on it through ``run_sync``; nothing here reads a URL of its own.
"""

from alembic import context

from storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `feedback-intake db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
