"""Engines and migrations. SQLite runs in WAL mode; the schema is upgraded on first start of an empty database.

Several processes may start on one empty database at once (`serve --workers N`, a fleet of containers):
migrations run while holding the database's migration lock (PostgreSQL: a transaction-level advisory lock;
SQLite: the write lock, BEGIN IMMEDIATE), in that same transaction, and the revision is read again once the
lock is held, so one process migrates and the others find the schema current."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from quotagate.errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration's revision (tests/store/test_migrations.py checks it against the scripts). A constant, so a
# gateway whose schema is current never imports Alembic (~12 MB of a process's memory).
SCHEMA_HEAD = "0003"
# pg_advisory_xact_lock key of schema migrations: any constant, the same in every Quotagate process.
MIGRATION_LOCK_ID = 0x51475F4D  # "QG_M"


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


def alembic_config(engine: Engine, connection: Connection | None = None) -> Config:
    """Alembic's config; with `connection`, migrations run on it, inside its open transaction."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    """The schema's revision as Alembic records it (one linear history: one row)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if revision is None else str(revision)


def _migrate(engine: Engine, conn: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(engine, conn), "head")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's migration lock until it commits."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            yield conn
    else:
        with engine.execution_options(immediate=True).begin() as conn:  # BEGIN IMMEDIATE: the write lock
            yield conn


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Migrate to the newest schema under the migration lock; returns (before, after) revisions."""
    try:
        with _migration_lock(engine) as conn:
            before = _revision(conn)
            _migrate(engine, conn)
            return before, _revision(conn)
    except OperationalError as exc:
        raise BackendUnavailable(f"database unreachable: {exc.orig}") from exc


def ensure_schema(engine: Engine) -> None:
    """Upgrade an empty database automatically; refuse to run on an out-of-date non-empty one."""
    try:
        head = SCHEMA_HEAD
        current = current_revision(engine)
        if current is None:
            with _migration_lock(engine) as conn:
                current = _revision(conn)  # another process may have migrated while we waited for the lock
                if current is None:
                    if inspect(conn).get_table_names():
                        raise ConfigError(
                            "the database has tables but no Quotagate schema version; is it the right database?"
                        )
                    _migrate(engine, conn)
                    current = _revision(conn)
        if current != head:
            raise ConfigError(
                f"database schema is at {current}, this Quotagate needs {head}: run `quotagate db upgrade`"
            )
    except OperationalError as exc:
        raise BackendUnavailable(f"database unreachable: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise BackendUnavailable(f"database error: {exc}") from exc
