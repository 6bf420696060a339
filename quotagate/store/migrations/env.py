"""Alembic environment: runs on ``config.attributes['connection']`` (inside the caller's transaction, which holds
the migration lock: store/db.py), else in a transaction of ``config.attributes['engine']``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from quotagate.store.tables import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():  # a no-op inside the caller's transaction: it commits with it
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    with context.config.attributes["engine"].begin() as connection:
        _run(connection)
