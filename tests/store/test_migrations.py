"""Migrations and models agree, and an empty database is upgraded on first start."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from quotagate.store.database import Database
from quotagate.store.db import SCHEMA_HEAD, alembic_config, current_revision, make_engine
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
    assert current_revision(db.engine) == SCHEMA_HEAD
    assert "gateway_keys" in inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.close()


def test_empty_postgres_database_is_upgraded_on_first_start(pg_databases) -> None:  # type: ignore[no-untyped-def]
    url = pg_databases.new_database(migrated=False)
    db = Database(url)
    assert current_revision(db.engine) == SCHEMA_HEAD
    db.close()


def test_the_schema_head_constant_is_the_newest_migration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SCHEMA_HEAD spares a current gateway Alembic's import; it must name the scripts' one head."""
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    assert ScriptDirectory.from_config(alembic_config(engine)).get_heads() == [SCHEMA_HEAD]


def test_a_gateway_on_a_current_schema_does_not_import_alembic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    Database(f"sqlite:///{tmp_path / 'q.db'}")  # migrated here, so the child finds it current
    code = (
        "import sys; from quotagate.store.database import Database; "
        f"Database('sqlite:///{tmp_path / 'q.db'}'); "
        "print(sorted(m for m in sys.modules if m.startswith('alembic')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
