"""`quotagate db upgrade|status`, the refusal to serve an old schema, and a safe first start of many processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from quotagate.errors import ConfigError
from quotagate.store.database import Database
from quotagate.store.db import SCHEMA_HEAD, alembic_config, current_revision, make_engine
from tests.conftest import REPO
from tests.support.cli import run
from tests.support.pg import PgDatabases


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty database (no schema at all) that QUOTAGATE_DATABASE_URL points at."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        pgs: PgDatabases = request.getfixturevalue("pg_databases")
        url = pgs.new_database(migrated=False)
    monkeypatch.setenv("QUOTAGATE_DATABASE_URL", url)
    return url


def _head_and_previous(url: str) -> tuple[str, str]:
    engine = make_engine(url)
    head = SCHEMA_HEAD
    engine.dispose()
    script = ScriptDirectory.from_config(alembic_config(engine))
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str), "the tests need at least two migrations"
    return head, previous


def test_db_upgrade_migrates_an_empty_database_then_is_a_no_op(
    empty_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    head, _ = _head_and_previous(empty_database)
    assert run(["db", "status"]) == 1
    assert capsys.readouterr().out == f"current empty, newest {head} (run `quotagate db upgrade`)\n"
    assert run(["db", "upgrade"]) == 0
    assert capsys.readouterr().out == f"database at {head} (was empty)\n"
    assert run(["db", "upgrade"]) == 0
    assert capsys.readouterr().out == f"database already at {head}\n"
    assert run(["db", "status"]) == 0
    assert capsys.readouterr().out == f"current {head}, newest {head}\n"


def test_serve_refuses_an_out_of_date_schema_until_db_upgrade(
    empty_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head, previous = _head_and_previous(empty_database)
    engine = make_engine(empty_database)
    command.upgrade(alembic_config(engine), previous)
    engine.dispose()
    env = {**os.environ, "QUOTAGATE_DATABASE_URL": empty_database, "QUOTAGATE_HOME": str(tmp_path / "home")}
    served = subprocess.run(
        [sys.executable, "-m", "quotagate", "serve", "--grpc", "127.0.0.1:0"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,  # a regression would serve forever: fail instead of hanging the suite
    )
    assert served.returncode == 2, served.stderr
    message = f"database schema is at {previous}, this Quotagate needs {head}: run `quotagate db upgrade`"
    assert f"quotagate: error: {message}" in served.stderr
    with pytest.raises(ConfigError, match="run `quotagate db upgrade`"):
        Database(empty_database)
    assert run(["db", "upgrade"]) == 0
    assert capsys.readouterr().out == f"database at {head} (was {previous})\n"
    Database(empty_database).close()


def test_a_database_with_foreign_tables_is_not_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    with pytest.raises(ConfigError, match="has tables but no Quotagate schema version"):
        Database(url)
    assert current_revision(engine) is None
    engine.dispose()


# Each process waits for the start file, so all three run the first-start upgrade at the same moment.
_FIRST_START = """
import sys, time
from pathlib import Path
url, ready, start = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
from quotagate.store.database import Database
ready.touch()
deadline = time.monotonic() + 120
while not start.exists():
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.005)
Database(url).close()
"""


def _start_at_once(url: str, workdir: Path, count: int = 3) -> list[subprocess.CompletedProcess[str]]:
    start = workdir / "start"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRST_START, url, str(workdir / f"ready-{i}"), str(start)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((workdir / f"ready-{i}").exists() for i in range(count)):
            assert time.monotonic() < deadline, "the processes did not get ready"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.02)
        start.touch()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _assert_migrated_once(url: str, results: list[subprocess.CompletedProcess[str]]) -> None:
    assert [r.returncode for r in results] == [0] * len(results), [r.stderr[-2000:] for r in results]
    engine = make_engine(url)
    assert current_revision(engine) == SCHEMA_HEAD
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


@pytest.mark.postgres
def test_three_processes_starting_on_one_empty_postgresql_database(pg_databases: PgDatabases, tmp_path: Path) -> None:
    url = pg_databases.new_database(migrated=False)
    _assert_migrated_once(url, _start_at_once(url, tmp_path))


def test_three_processes_starting_on_one_empty_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    _assert_migrated_once(url, _start_at_once(url, tmp_path))
