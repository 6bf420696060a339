"""Migrations and models agree, and an empty database is upgraded on first start."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from quotagate.store.database import Database
from quotagate.store.db import current_revision, head_revision, make_engine
from quotagate.store.tables import Base


def test_models_match_the_migrations(database_url: str) -> None:
    engine = make_engine(database_url)
    Database(database_url)  # upgrades if needed
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == [], f"models changed without a migration (scripts/new-migration): {diff}"


def test_empty_database_is_upgraded_on_first_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'fresh' / 'q.db'}"
    db = Database(url)
    assert current_revision(db.engine) == head_revision(db.engine)
    assert "gateway_keys" in inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.close()


def test_empty_postgres_database_is_upgraded_on_first_start(pg_databases) -> None:  # type: ignore[no-untyped-def]
    url = pg_databases.new_database(migrated=False)
    db = Database(url)
    assert current_revision(db.engine) == head_revision(db.engine)
    db.close()
