"""`quotagate audit ...` end to end through the CLI: output and exit codes, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete

from quotagate.ledger.checkpoint import key_id, load_private_key, public_pem
from quotagate.store.database import Database
from quotagate.store.tables import LedgerCheckpoint
from tests.ledger import chains as c
from tests.ledger.chains import ORG
from tests.support.cli import run

OK, BROKEN, USAGE, NOT_FOUND = 0, 1, 2, 3


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


def test_the_anchor_directory_catches_truncation_when_the_table_is_wiped(
    ledger: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors"
    assert run(["audit", "checkpoint"]) == OK
    c.delete_seqs(ledger, 20, 21)
    with ledger.transaction() as session:
        session.execute(delete(LedgerCheckpoint))
    capsys.readouterr()
    assert run(["audit", "verify"]) == BROKEN  # the configured anchor directory is read by default
    out = capsys.readouterr().out
    assert f"anchors: 1 checkpoint(s) read from {anchors}" in out
    assert "[truncated] the chain ends at seq 19 but checkpoint seq 21 signed" in out
    assert "entries 20..21 (at least) were removed from the tail" in out

    assert run(["audit", "verify", "--no-anchors"]) == OK  # the database alone cannot tell
    assert "seq 1..19 not covered by a checkpoint yet" in capsys.readouterr().out
    [anchor] = (anchors / ORG).iterdir()
    assert run(["audit", "verify", "--no-anchors", "--checkpoint", str(anchor)]) == BROKEN
    capsys.readouterr()
    anchor.rename(tmp_path / "moved.json")
    assert run(["audit", "verify"]) == OK
    assert "anchors: 0 checkpoint(s) read from" in capsys.readouterr().out
    anchors.rename(tmp_path / "gone")
    assert run(["audit", "verify"]) == OK
    assert f"anchors: no anchor directory at {anchors}" in capsys.readouterr().out


def test_a_checkpoint_in_the_table_and_the_anchors_counts_once(
    ledger: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["audit", "checkpoint"]) == OK
    capsys.readouterr()
    assert run(["audit", "verify", "--org", ORG]) == OK
    out = capsys.readouterr().out
    assert "1 checkpoint(s) matched, latest seq 21 signed" in out
    assert "not covered by a checkpoint" not in out


def test_key_rotation_with_trusted_earlier_keys(
    ledger: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """After rotating the signing key, the old key's checkpoints (table and anchors) verify once its public
    key is listed in QUOTAGATE_LEDGER_TRUSTED_PUBLIC_KEYS; the new key continues the chain."""
    assert run(["audit", "checkpoint"]) == OK
    old = load_private_key(os.environ["QUOTAGATE_LEDGER_SIGNING_KEY"])
    new = Ed25519PrivateKey.generate()
    monkeypatch.setenv("QUOTAGATE_LEDGER_SIGNING_KEY", base64.urlsafe_b64encode(new.private_bytes_raw()).decode())
    with ledger.transaction() as session:
        c.append_entries(session, ORG, [c.usage(100)])
    assert run(["audit", "checkpoint"]) == OK
    capsys.readouterr()
    assert run(["audit", "verify", "--org", ORG]) == BROKEN
    assert "[bad-checkpoint] checkpoint seq 21" in capsys.readouterr().out  # the old key is unknown now
    earlier = tmp_path / "earlier.pem"
    monkeypatch.setenv("QUOTAGATE_LEDGER_SIGNING_KEY", base64.urlsafe_b64encode(old.private_bytes_raw()).decode())
    assert run(["audit", "public-key"]) == OK  # what an operator saves before switching keys
    printed = capsys.readouterr()
    earlier.write_text(printed.out)
    assert printed.err == f"key id {key_id(old.public_key())}\n"
    assert printed.out.encode() == public_pem(old.public_key())
    monkeypatch.setenv("QUOTAGATE_LEDGER_SIGNING_KEY", base64.urlsafe_b64encode(new.private_bytes_raw()).decode())
    monkeypatch.setenv("QUOTAGATE_LEDGER_TRUSTED_PUBLIC_KEYS", str(earlier))
    assert run(["audit", "verify", "--org", ORG, "--json"]) == OK
    [report] = json.loads(capsys.readouterr().out)
    assert (report["checkpoints_matched"], report["latest_checkpoint"]["seq"]) == (2, 22)
    assert report["latest_checkpoint"]["key_id"] == key_id(new.public_key())


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


def test_the_embedded_default_generates_its_key(
    use_database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUOTAGATE_LEDGER_SIGNING_KEY", raising=False)
    if not use_database.startswith("sqlite"):
        assert run(["audit", "checkpoint"]) == USAGE
        assert "required with PostgreSQL" in capsys.readouterr().err
        return
    db = Database(use_database)
    c.build_chain(db, batches=1)
    assert run(["audit", "checkpoint"]) == OK
    assert run(["audit", "verify"]) == OK
