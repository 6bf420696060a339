"""`quotagate audit ...` end to end through the CLI: output and exit codes, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete

from quotagate.cli.main import main
from quotagate.ledger.checkpoint import public_pem
from quotagate.store.database import Database
from quotagate.store.tables import LedgerCheckpoint
from tests.ledger import chains as c
from tests.ledger.chains import ORG

OK, BROKEN, USAGE, NOT_FOUND = 0, 1, 2, 3


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def ledger(use_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Database:
    seed = base64.urlsafe_b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()
    monkeypatch.setenv("QUOTAGATE_LEDGER_SIGNING_KEY", seed)
    monkeypatch.setenv("QUOTAGATE_LEDGER_ANCHOR_DIR", str(tmp_path / "anchors"))
    db = Database(use_database)
    c.build_chain(db)
    return db


def test_checkpoint_then_verify(ledger: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(["audit", "checkpoint"]) == OK
    out = capsys.readouterr().out
    assert f"{ORG}: signed seq 21" in out
    assert f"published to directory {tmp_path / 'anchors'}" in out
    assert run(["audit", "verify"]) == OK
    assert f"{ORG}: OK: 21 entries verified (seq 1..21)" in capsys.readouterr().out
    assert run(["audit", "verify", "--org", ORG, "--json"]) == OK
    [report] = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["entries"], report["checkpoints_matched"]) == (True, 21, 1)


def test_a_break_exits_non_zero_and_names_the_link(ledger: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["audit", "checkpoint"]) == OK
    c.delete_seqs(ledger, 9)
    capsys.readouterr()
    assert run(["audit", "verify"]) == BROKEN
    assert "[deleted] entry 9 missing: after seq 8 comes 10" in capsys.readouterr().out


def test_a_head_that_does_not_verify_is_not_signed(ledger: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["audit", "checkpoint"]) == OK
    with ledger.transaction() as session:
        c.append_entries(session, ORG, [c.usage(100), c.usage(101)])
    c.set_columns(ledger, 22, amount_nanos=0)
    capsys.readouterr()
    assert run(["audit", "checkpoint", "--org", ORG]) == BROKEN
    assert "acme: NOT SIGNED, the chain does not verify" in capsys.readouterr().out


def test_anchored_checkpoints_catch_truncation_when_the_table_is_wiped(
    ledger: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["audit", "checkpoint"]) == OK
    c.delete_seqs(ledger, 20, 21)
    with ledger.transaction() as session:
        session.execute(delete(LedgerCheckpoint))
    assert run(["audit", "verify"]) == OK  # the database alone cannot tell
    capsys.readouterr()
    assert run(["audit", "verify", "--checkpoint", str(tmp_path / "anchors")]) == BROKEN
    assert "[truncated]" in capsys.readouterr().out
    [anchor] = (tmp_path / "anchors" / ORG).iterdir()
    assert run(["audit", "verify", "--checkpoint", str(anchor)]) == BROKEN


def test_a_pinned_public_key(ledger: Database, tmp_path: Path) -> None:
    assert run(["audit", "checkpoint"]) == OK
    other = tmp_path / "other.pem"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    assert run(["audit", "verify", "--public-key", str(other)]) == BROKEN


def test_export_then_verify_offline(ledger: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["audit", "checkpoint"]) == OK
    out = tmp_path / "export"
    assert run(["audit", "export", "--org", ORG, "--out", str(out)]) == OK
    assert "wrote entries 1..21 and 1 checkpoint(s)" in capsys.readouterr().out
    assert run(["audit", "verify", "--export", str(out)]) == OK
    assert run(["audit", "verify", "--export", str(out), "--public-key", str(out / "public_key.pem")]) == OK
    assert run(["audit", "export", "--org", ORG, "--out", str(out)]) == USAGE  # not empty
    assert run(["audit", "export", "--org", "nobody", "--out", str(tmp_path / "x")]) == NOT_FOUND
    assert run(["audit", "verify", "--org", "nobody"]) == NOT_FOUND
    (out / "entries.jsonl").write_text("")
    assert run(["audit", "verify", "--export", str(out)]) == BROKEN


def test_the_embedded_default_generates_its_key(use_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    if not use_database.startswith("sqlite"):
        assert run(["audit", "checkpoint"]) == USAGE
        assert "required with PostgreSQL" in capsys.readouterr().err
        return
    db = Database(use_database)
    c.build_chain(db, batches=1)
    assert run(["audit", "checkpoint"]) == OK
    assert run(["audit", "verify"]) == OK
