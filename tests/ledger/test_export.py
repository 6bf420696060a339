"""Export -> offline verification: the auditor's path, without the database, the store or the settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from quotagate.ledger.anchors import DirectorySink
from quotagate.ledger.checkpoint import Signer
from quotagate.ledger.export import CHECKPOINTS, ENTRIES, MANIFEST, README, verify_export
from quotagate.store.database import Database
from quotagate.store.ledger_audit import export_org
from quotagate.store.ledger_checkpoints import Checkpointer
from quotagate.store.ledger_repo import append_entries
from tests.conftest import REPO
from tests.ledger import chains as c
from tests.ledger.chains import ORG, START


@dataclass
class Exported:
    db: Database
    signer: Signer
    out: Path


@pytest.fixture
def exported(database_url: str, tmp_path: Path) -> Iterator[Exported]:
    db = Database(database_url)
    signer = c.new_signer()
    checkpointer = Checkpointer(db, signer, [DirectorySink(tmp_path / "anchors")], 60)
    c.build_chain(db, batches=2)  # 11 entries
    checkpointer.checkpoint()
    c.build_chain(db, batches=2, start=START + timedelta(minutes=10))  # 22 entries: the same chain grows
    checkpointer.checkpoint()
    export_org(db, ORG, signer.public_key, tmp_path / "export")
    yield Exported(db, signer, tmp_path / "export")
    db.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_an_export_verifies_offline(exported: Exported) -> None:
    report = verify_export(exported.out)
    assert report.ok, report.summary()
    assert (report.entries, report.head_seq, report.checkpoints_matched) == (22, 22, 2)
    manifest = json.loads((exported.out / MANIFEST).read_text())
    assert (manifest["org"], manifest["first_seq"], manifest["last_seq"], manifest["checkpoints"]) == (ORG, 1, 22, 2)
    assert manifest["key_id"] == exported.signer.key_id
    assert exported.signer.key_id in (exported.out / README).read_text()


def test_the_readme_script_verifies_with_python_and_cryptography_only(exported: Exported, tmp_path: Path) -> None:
    readme = (exported.out / README).read_text()
    script = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "verify.py").write_text(script)
    ok = subprocess.run(
        [sys.executable, str(tmp_path / "verify.py"), str(exported.out)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"OK: {ORG} seq 1..22")
    entries = lines(exported.out / ENTRIES)
    (exported.out / ENTRIES).write_text("\n".join(entries[:5] + entries[6:]) + "\n")
    broken = subprocess.run(
        [sys.executable, str(tmp_path / "verify.py"), str(exported.out)], capture_output=True, text=True
    )
    assert broken.returncode != 0
    assert "seq 6" in broken.stderr


def test_verification_imports_neither_the_store_nor_the_settings(exported: Exported) -> None:
    code = (
        "import sys; from pathlib import Path; from quotagate.ledger.export import verify_export\n"
        f"report = verify_export(Path({str(exported.out)!r}))\n"
        "assert report.ok, report.summary()\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'alembic', 'psycopg', 'pydantic'}"
        " or m.startswith(('quotagate.store', 'quotagate.settings', 'quotagate.app'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {
        **os.environ,
        "QUOTAGATE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    module = subprocess.run(
        [sys.executable, "-m", "quotagate.ledger", str(exported.out)], capture_output=True, text=True, env=env
    )
    assert module.returncode == 0, module.stderr
    assert "OK: 22 entries verified" in module.stdout


def rewrite_line(path: Path, index: int, change: dict[str, object]) -> None:
    all_lines = lines(path)
    all_lines[index] = json.dumps({**json.loads(all_lines[index]), **change})
    path.write_text("\n".join(all_lines) + "\n")


def test_a_tampered_export_is_caught(exported: Exported) -> None:
    entry = json.loads(lines(exported.out / ENTRIES)[6])
    rewrite_line(exported.out / ENTRIES, 6, {"body": entry["body"].replace('"output":20', '"output":21')})
    assert [(p.kind, p.seq) for p in verify_export(exported.out).problems] == [("edited", 7)]


def test_a_column_edited_in_an_export_is_caught(exported: Exported) -> None:
    rewrite_line(exported.out / ENTRIES, 6, {"amount_nanos": 1})
    assert [(p.kind, p.seq) for p in verify_export(exported.out).problems] == [("column-edited", 7)]


def test_a_cut_export_is_caught(exported: Exported) -> None:
    (exported.out / ENTRIES).write_text("\n".join(lines(exported.out / ENTRIES)[:-3]) + "\n")
    assert [(p.kind, p.seq) for p in verify_export(exported.out).problems] == [("truncated", 20)]


def test_a_garbled_line_is_caught(exported: Exported) -> None:
    all_lines = lines(exported.out / ENTRIES)
    (exported.out / ENTRIES).write_text("\n".join([*all_lines[:3], "{not json", *all_lines[4:]]) + "\n")
    problems = verify_export(exported.out).problems
    assert [p.kind for p in problems] == ["malformed"]
    assert "line 4" in problems[0].message


def test_a_pinned_key_rejects_checkpoints_of_another(exported: Exported) -> None:
    report = verify_export(exported.out, [c.new_signer().public_key])
    assert [p.kind for p in report.problems] == ["bad-checkpoint", "bad-checkpoint"]
    assert verify_export(exported.out, [exported.signer.public_key]).ok


def test_anchored_checkpoints_catch_a_rewritten_export(exported: Exported, tmp_path: Path) -> None:
    """An operator re-writes history and re-exports without the old checkpoints: the auditor's own copies
    of the anchored checkpoints still catch it."""
    from quotagate.ledger.checkpoint import read_checkpoints

    anchored = read_checkpoints(tmp_path / "anchors")
    (exported.out / CHECKPOINTS).write_text("")
    entry = json.loads(lines(exported.out / ENTRIES)[2])
    body = entry["body"].replace('"output":20', '"output":2')
    rewritten = []
    prev = entry["prev_hash"]
    for i, line in enumerate(lines(exported.out / ENTRIES)):
        e = json.loads(line)
        if i >= 2:
            e["body"] = body if i == 2 else e["body"]
            e["prev_hash"], e["hash"] = prev, c.link_hash(prev, e["body"].encode())
            prev = e["hash"]
        rewritten.append(json.dumps(e))
    (exported.out / ENTRIES).write_text("\n".join(rewritten) + "\n")
    assert verify_export(exported.out).ok  # consistent in itself
    assert [(p.kind, p.seq) for p in verify_export(exported.out, extra=anchored).problems] == [("rewritten", 11)]


def test_since_starts_after_a_signed_checkpoint(exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "since"
    manifest = export_org(
        exported.db, ORG, exported.signer.public_key, out, since=START + timedelta(minutes=1, seconds=30)
    )
    # The entries at or after 1m30s are the second half; the export starts after the checkpoint at seq 11.
    assert (manifest["first_seq"], manifest["last_seq"], manifest["checkpoints"]) == (12, 22, 2)
    report = verify_export(out)
    assert report.ok, report.summary()
    assert report.entries == 11
    (out / CHECKPOINTS).write_text(lines(out / CHECKPOINTS)[1] + "\n")  # drop the anchoring checkpoint
    assert [p.kind for p in verify_export(out).problems] == ["unanchored"]


def test_an_export_of_new_entries_only_is_empty_after_the_last_checkpoint(exported: Exported, tmp_path: Path) -> None:
    with exported.db.transaction() as session:
        append_entries(session, ORG, [c.usage(500)], START + timedelta(days=1))
    manifest = export_org(
        exported.db, ORG, exported.signer.public_key, tmp_path / "new", since=START + timedelta(hours=1)
    )
    assert (manifest["first_seq"], manifest["last_seq"]) == (23, 23)
    assert verify_export(tmp_path / "new").ok
