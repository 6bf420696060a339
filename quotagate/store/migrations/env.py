"""Alembic environment: runs on the engine the caller put in ``config.attributes['engine']``."""

from __future__ import annotations

from alembic import context

from quotagate.store.tables import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
