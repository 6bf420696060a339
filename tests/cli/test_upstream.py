"""`quotagate upstream set-key|clear-key` on SQLite and PostgreSQL: the secret is stored encrypted, used at
once, never printed or logged, and a re-applied manifest does not undo it."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.secret_box import new_master_key
from quotagate.store.snapshot_loader import load_snapshot
from quotagate.upstream_keys import ProviderKeys
from tests.conftest import EXAMPLES
from tests.store.test_manifest_apply import dump_db
from tests.support.cli import run
from tests.support.pg import PgDatabases

SECRET = "sk-proj-Quotagate-test-8f41c2d9e0b7a6"
FROM_ENV = "sk-proj-manifest-env-key-55aa"


@pytest.fixture
def applied(use_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """The seed manifest applied (its credential is env:OPENAI_API_KEY); PostgreSQL gets a master key."""
    if use_database.startswith("postgresql"):
        monkeypatch.setenv("QUOTAGATE_MASTER_KEY", new_master_key())
    monkeypatch.setenv("OPENAI_API_KEY", FROM_ENV)
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    capsys.readouterr()
    return use_database


def key_in_use(provider: Provider = Provider.OPENAI) -> str | None:
    """The provider key a gateway process would send now (a fresh snapshot, as after a config poll)."""
    app = open_app()
    try:
        with app.db.read() as session:
            snapshot = load_snapshot(session)
        return ProviderKeys(app.secret_box).key_for(snapshot.credentials.get(provider))
    finally:
        app.close()


def _assert_secret_not_shown(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out = capsys.readouterr()
    for shown in (out.out, out.err, caplog.text):
        assert SECRET not in shown
    return out.out


def test_set_key_from_stdin(
    applied: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert key_in_use() == FROM_ENV
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert run(["upstream", "set-key", "openai", "--from-stdin"]) == 0
    assert _assert_secret_not_shown(capsys, caplog) == "openai: key stored (version 1); the secret is not shown\n"
    assert key_in_use() == SECRET


def test_set_key_from_env(
    applied: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("NEW_OPENAI_KEY", SECRET)
    assert run(["upstream", "set-key", "openai", "--from-env", "NEW_OPENAI_KEY"]) == 0
    assert _assert_secret_not_shown(capsys, caplog) == "openai: key stored (version 1); the secret is not shown\n"
    assert key_in_use() == SECRET
    # Setting it again is a rotation: a new version, used by the next snapshot.
    monkeypatch.setenv("NEW_OPENAI_KEY", SECRET + "-2")
    assert run(["upstream", "set-key", "openai", "--from-env", "NEW_OPENAI_KEY"]) == 0
    assert "(version 2)" in _assert_secret_not_shown(capsys, caplog)
    assert key_in_use() == SECRET + "-2"


def test_set_key_refuses_an_empty_source_and_changes_nothing(
    applied: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = dump_db(applied)
    assert run(["upstream", "set-key", "openai", "--from-env", "NOT_SET_ANYWHERE"]) == 2
    assert "environment variable NOT_SET_ANYWHERE is empty or unset" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert run(["upstream", "set-key", "openai", "--from-stdin"]) == 2
    assert "the provider key is empty" in capsys.readouterr().err
    assert dump_db(applied) == before


def _raw_sqlite_bytes(url: str) -> bytes:
    """The database file and its WAL as bytes: what someone copying the data directory gets."""
    path = Path(str(make_url(url).database))
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def test_the_stored_key_is_ciphertext_only(applied: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert run(["upstream", "set-key", "openai", "--from-stdin"]) == 0
    rows = repr(dump_db(applied))  # every row of every table, audit events and ledger entries included
    assert SECRET not in rows and "provider_credentials" in rows
    assert "da-sk-acme-team" in rows  # the dump does show row contents
    if applied.startswith("sqlite"):
        raw = _raw_sqlite_bytes(applied)
        assert b"da-sk-acme-team" in raw  # the scan sees row data...
        assert SECRET.encode() not in raw  # ...and no plaintext key in it
    assert key_in_use() == SECRET


def test_reapplying_an_env_manifest_keeps_the_stored_key_until_clear_key(
    applied: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert run(["upstream", "set-key", "openai", "--from-stdin"]) == 0
    capsys.readouterr()
    before = dump_db(applied)
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "No changes. Kept as changed outside the manifest:",
        "! credential openai (uses the key stored with `quotagate upstream set-key`; the manifest's "
        "env:OPENAI_API_KEY applies after `quotagate upstream clear-key openai`)",
    ]
    assert dump_db(applied) == before
    assert key_in_use() == SECRET

    assert run(["upstream", "clear-key", "openai"]) == 0
    assert capsys.readouterr().out == "openai: stored key removed; the key is read from $OPENAI_API_KEY again\n"
    assert key_in_use() == FROM_ENV
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    assert capsys.readouterr().out == "No changes. The database matches the manifest.\n"
    assert run(["upstream", "clear-key", "openai"]) == 2
    assert "no key is stored for openai" in capsys.readouterr().err


def test_clear_key_needs_an_env_reference_to_fall_back_to(
    use_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key stored before any manifest names the provider has no env:VAR: clearing it would leave no key."""
    if use_database.startswith("postgresql"):
        monkeypatch.setenv("QUOTAGATE_MASTER_KEY", new_master_key())
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert run(["upstream", "set-key", "anthropic", "--from-stdin"]) == 0
    capsys.readouterr()
    assert run(["upstream", "clear-key", "anthropic"]) == 2
    assert "anthropic has no env:VAR reference to fall back to" in capsys.readouterr().err
    assert key_in_use(Provider.ANTHROPIC) == SECRET


@pytest.mark.postgres
def test_postgresql_needs_a_master_key_to_store_one(
    pg_databases: PgDatabases, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_databases.new_database()
    monkeypatch.setenv("QUOTAGATE_DATABASE_URL", url)
    monkeypatch.setenv("NEW_OPENAI_KEY", SECRET)
    before = dump_db(url)
    assert run(["upstream", "set-key", "openai", "--from-env", "NEW_OPENAI_KEY"]) == 2
    out = capsys.readouterr()
    assert "QUOTAGATE_MASTER_KEY is required to store credentials in PostgreSQL" in out.err
    assert SECRET not in out.out + out.err
    assert dump_db(url) == before
