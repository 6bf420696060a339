"""Fixtures shared by the whole suite."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg import PgDatabases
from tests.support.servers import postgres_admin_url, unavailable

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own QUOTAGATE_HOME and no inherited QUOTAGATE_* settings."""
    for name in list(os.environ):
        if name.startswith("QUOTAGATE_") and not name.startswith("QUOTAGATE_TEST_") and name != "QUOTAGATE_SOAK":
            monkeypatch.delenv(name)
    home = tmp_path / "qghome"
    monkeypatch.setenv("QUOTAGATE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    dbs = PgDatabases()
    try:
        dbs.ping()
    except Exception as exc:
        unavailable("PostgreSQL", postgres_admin_url(), exc)
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database URL: a SQLite file, and a PostgreSQL database on the test server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    dbs: PgDatabases = request.getfixturevalue("pg_databases")
    return dbs.new_database()


@pytest.fixture
def use_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points QUOTAGATE_DATABASE_URL (what the CLI and open_app read) at the fresh database. On PostgreSQL
    it also sets a ledger signing key, as every multi-process deployment must (a gateway refuses to start
    without one: docs/ledger.md)."""
    monkeypatch.setenv("QUOTAGATE_DATABASE_URL", database_url)
    if not database_url.startswith("sqlite"):
        monkeypatch.setenv("QUOTAGATE_LEDGER_SIGNING_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    return database_url
