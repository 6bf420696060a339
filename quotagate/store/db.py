"""Engines and migrations. SQLite runs in WAL mode; the schema is upgraded on first start of an empty database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from quotagate.errors import BackendUnavailable, ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite, creates the data directory and sets WAL, foreign keys, a busy timeout."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"invalid database URL: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Take transaction control from pysqlite so writers can BEGIN IMMEDIATE (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    # WAL lets readers (snapshot refresh, reports) run while the single writer appends.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Ledger appends read the chain head then write: IMMEDIATE takes the write lock first, so two
    # processes can never both append after the same head.
    immediate = conn.get_execution_options().get("immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Migrate to the newest schema; returns (before, after) revisions."""
    try:
        before = current_revision(engine)
        command.upgrade(alembic_config(engine), "head")
        return before, current_revision(engine)
    except OperationalError as exc:
        raise BackendUnavailable(f"database unreachable: {exc.orig}") from exc


def ensure_schema(engine: Engine) -> None:
    """Upgrade an empty database automatically; refuse to run on an out-of-date non-empty one."""
    try:
        current = current_revision(engine)
        if current is None:
            if inspect(engine).get_table_names():
                raise ConfigError("the database has tables but no Quotagate schema version; is it the right database?")
            upgrade(engine)
        elif current != head_revision(engine):
            raise ConfigError(
                f"database schema is at {current}, this Quotagate needs {head_revision(engine)}: run `quotagate db upgrade`"
            )
    except OperationalError as exc:
        raise BackendUnavailable(f"database unreachable: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise BackendUnavailable(f"database error: {exc}") from exc
