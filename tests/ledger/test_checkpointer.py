"""Checkpoints: signed only when the chain verifies, stored once, published to every sink, retried."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from quotagate.errors import ConfigError
from quotagate.ledger.anchors import DirectorySink, HttpSink
from quotagate.ledger.checkpoint import (
    SIGNING_KEY_FILE,
    Checkpoint,
    KeyRing,
    Signer,
    key_id,
    private_pem,
    read_checkpoints,
    signer_from_settings,
)
from quotagate.runtime import open_runtime
from quotagate.settings import Settings
from quotagate.store.database import Database
from quotagate.store.ledger_checkpoints import Checkpointer, open_checkpointer
from quotagate.store.ledger_repo import append_entries
from quotagate.store.tables import LedgerCheckpoint
from tests.conftest import REPO
from tests.ledger import chains as c
from tests.ledger.chains import ORG


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    c.build_chain(database)
    yield database
    database.close()


def stored(db: Database) -> list[LedgerCheckpoint]:
    with db.read() as session:
        return list(session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.id)))


def test_moved_heads_are_signed_once(db: Database, tmp_path: Path) -> None:
    signer = c.new_signer()
    checkpointer = Checkpointer(db, signer, [DirectorySink(tmp_path / "anchors")], 60)
    [first] = checkpointer.checkpoint()
    assert (first.status, first.checkpoint and first.checkpoint.seq) == ("signed", 21)
    assert KeyRing([signer.public_key]).problem(first.checkpoint) is None
    assert [o.status for o in checkpointer.checkpoint()] == ["unchanged"]
    with db.transaction() as session:
        append_entries(session, ORG, [c.usage(100)])
    assert [(o.status, o.checkpoint and o.checkpoint.seq) for o in checkpointer.checkpoint()] == [("signed", 22)]
    assert [o.status for o in checkpointer.checkpoint([ORG], force=True)] == ["signed"]
    rows = stored(db)
    assert [r.seq for r in rows] == [21, 22, 22]
    assert all(r.anchor and r.anchor.startswith(str(tmp_path)) for r in rows)
    published = read_checkpoints(tmp_path / "anchors")
    assert sorted(cp.seq for cp in published) == [21, 22, 22]
    assert c.verify(db, signer).checkpoints_matched == 3


def test_a_tampered_chain_is_not_signed(db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    signer = c.new_signer()
    checkpointer = Checkpointer(db, signer, [DirectorySink(tmp_path)], 60)
    checkpointer.checkpoint()
    with db.transaction() as session:
        append_entries(session, ORG, [c.usage(100), c.usage(101)])
    c.set_columns(db, 22, amount_nanos=0)
    [outcome] = checkpointer.checkpoint()
    assert outcome.status == "refused"
    assert outcome.report is not None
    assert [(p.kind, p.seq) for p in outcome.report.problems] == [("column-edited", 22)]
    assert "does not verify" in caplog.text
    assert [r.seq for r in stored(db)] == [21]


def test_a_truncated_chain_is_not_signed(db: Database, tmp_path: Path) -> None:
    checkpointer = Checkpointer(db, c.new_signer(), [DirectorySink(tmp_path)], 60)
    checkpointer.checkpoint()
    c.delete_seqs(db, 21)
    [outcome] = checkpointer.checkpoint()
    assert outcome.status == "refused"
    assert outcome.report is not None
    assert [p.kind for p in outcome.report.problems] == ["truncated"]


def test_a_forged_checkpoint_row_is_neither_trusted_nor_published(db: Database, tmp_path: Path) -> None:
    signer = c.new_signer()
    checkpointer = Checkpointer(db, signer, [DirectorySink(tmp_path)], 60)
    c.set_columns(db, 21, hash="ab" * 32)  # the forger also edits the head's hash column to match
    forged = Checkpoint(ORG, 21, "ab" * 32, "2026-01-01T00:00:00.000000+00:00", signer.key_id, "AAAA")
    with db.transaction() as session:
        session.add(
            LedgerCheckpoint(
                organization_id=ORG, seq=21, hash=forged.hash, signed_at=c.START, key_id=forged.key_id, signature="AAAA"
            )
        )
    [outcome] = checkpointer.checkpoint()
    assert outcome.status == "refused"  # verified from genesis: the hash column no longer matches
    assert not list(tmp_path.rglob("*.json"))  # the forged row was not published


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, object]] = []

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_anchor() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/anchor"
    server.shutdown()


def test_an_unreachable_sink_is_retried_next_round(db: Database, tmp_path: Path, http_anchor: str) -> None:
    signer = c.new_signer()
    down = Checkpointer(db, signer, [DirectorySink(tmp_path), HttpSink("http://127.0.0.1:9/nothing", 2)], 60)
    [outcome] = down.checkpoint()
    assert outcome.status == "signed"
    assert [r.anchor for r in stored(db)] == [None]  # stored, but not yet anchored everywhere

    up = Checkpointer(db, signer, [HttpSink(http_anchor)], 60)
    assert up.publish_pending() == 1
    assert [r.anchor for r in stored(db)] == [http_anchor]
    [posted] = _Receiver.received
    assert Checkpoint.from_json(posted) == outcome.checkpoint


def test_run_signs_periodically(db: Database, tmp_path: Path) -> None:
    checkpointer = Checkpointer(db, c.new_signer(), [DirectorySink(tmp_path)], 0.05)

    async def run_briefly() -> None:
        task = asyncio.create_task(checkpointer.run())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if stored(db):
                break
        task.cancel()

    asyncio.run(run_briefly())
    assert [r.seq for r in stored(db)] == [21]


def test_open_checkpointer_follows_the_settings(database_url: str, tmp_path: Path) -> None:
    database = Database(database_url)
    seed = base64.urlsafe_b64encode(bytes(range(32))).decode()
    assert open_checkpointer(Settings(home=tmp_path, ledger_checkpoint_interval_s=0), database) is None
    checkpointer = open_checkpointer(
        Settings(home=tmp_path, ledger_signing_key=seed, ledger_anchor_dir=tmp_path / "a"), database
    )
    assert checkpointer is not None
    assert checkpointer.interval_s == 60
    assert [s.name for s in checkpointer.sinks] == [f"directory {tmp_path / 'a'}"]
    if database.dialect == "postgresql":
        with pytest.raises(ConfigError, match="required with PostgreSQL"):
            open_checkpointer(Settings(home=tmp_path), database)
    database.close()


def test_signing_key_forms(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    expected = key_id(private.public_key())
    seed = base64.urlsafe_b64encode(private.private_bytes_raw()).decode().rstrip("=")
    pem = private_pem(private).decode()
    (tmp_path / "key.pem").write_text(pem)
    for settings in (
        Settings(home=tmp_path, ledger_signing_key=pem),
        Settings(home=tmp_path, ledger_signing_key=seed),
        Settings(home=tmp_path, ledger_signing_key_file=tmp_path / "key.pem"),
    ):
        assert signer_from_settings(settings, "postgresql").key_id == expected
    with pytest.raises(ConfigError, match="Ed25519"):
        signer_from_settings(Settings(home=tmp_path, ledger_signing_key="not a key"), "sqlite")


def test_the_embedded_key_is_generated_once_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = signer_from_settings(Settings(home=home), "sqlite")
    assert stat.S_IMODE((home / SIGNING_KEY_FILE).stat().st_mode) == 0o600
    assert signer_from_settings(Settings(home=home), "sqlite").key_id == first.key_id
    assert list(home.iterdir()) == [home / SIGNING_KEY_FILE]  # no temporary file left behind


def test_signer_signs_what_the_keyring_verifies() -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    cp = signer.sign(ORG, 5, "ab" * 32)
    ring = KeyRing([signer.public_key])
    assert ring.problem(cp) is None
    assert ring.problem(Checkpoint.from_json({**cp.to_json(), "seq": 6})) is not None


def test_a_gateway_on_postgresql_without_a_signing_key_refuses_to_start(database_url: str, tmp_path: Path) -> None:
    """Periodic checkpoints cannot silently be off: `serve` on PostgreSQL without the shared key exits with a
    clear error before it listens; with the interval explicitly 0 it starts without a checkpointer."""
    if database_url.startswith("sqlite"):  # the embedded default signs with its generated key
        runtime = open_runtime(Settings(home=tmp_path, database_url=database_url))
        assert runtime.checkpointer is not None
        runtime.app.close()
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_")}
    env.update(QUOTAGATE_HOME=str(tmp_path / "home"), QUOTAGATE_DATABASE_URL=database_url, PYTHONPATH=str(REPO))
    serve = subprocess.Popen(
        [sys.executable, "-m", "quotagate", "serve", "--grpc", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert serve.returncode == 2, (out, err)
    assert "QUOTAGATE_LEDGER_SIGNING_KEY or QUOTAGATE_LEDGER_SIGNING_KEY_FILE is required with PostgreSQL" in err
    assert "QUOTAGATE_LEDGER_CHECKPOINT_INTERVAL_S=0" in err
    assert "listening" not in out
    runtime = open_runtime(Settings(home=tmp_path, database_url=database_url, ledger_checkpoint_interval_s=0))
    assert runtime.checkpointer is None
    runtime.app.close()


RACER = """
import base64, sys, time
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from quotagate.ledger.anchors import DirectorySink
from quotagate.ledger.checkpoint import Signer
from quotagate.store.database import Database
from quotagate.store.ledger_checkpoints import Checkpointer
from quotagate.store.ledger_repo import NewEntry, append_entries

url, seed, anchors, name, start_at, rounds = sys.argv[1:7]
db = Database(url, auto_upgrade=False)
signer = Signer(Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(seed)))
checkpointer = Checkpointer(db, signer, [DirectorySink(Path(anchors))], 60)
time.sleep(max(0.0, float(start_at) - time.time()))
signed = 0
for r in range(int(rounds)):
    if r % 2 == 0:  # heads move while the other process signs
        with db.transaction() as session:
            append_entries(session, "acme", [NewEntry("usage", f"{name}-{r}", -1, {"w": name})])
    signed += sum(o.status == "signed" for o in checkpointer.checkpoint())
print(signed)
db.close()
"""


def test_checkpointers_racing_on_one_head_store_one_checkpoint_per_seq(db: Database, tmp_path: Path) -> None:
    """Two gateway processes with the shared key, both signing (and moving) the same chain's head at once:
    every stored checkpoint is distinct per seq, verifies, matches the chain and was anchored."""
    seed = base64.urlsafe_b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()
    signer = Signer(Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(seed)))
    anchors, rounds = tmp_path / "anchors", 12
    start_at = str(time.time() + 3)  # both have imported and connected by then
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, db.url, seed, str(anchors), f"p{i}", start_at, str(rounds)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    signed = 0
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        signed += int(out)
    rows = stored(db)
    seqs = [r.seq for r in rows]
    assert len(rows) == signed and signed >= 2
    assert len(set(seqs)) == len(seqs), seqs  # never two checkpoints of one head
    assert seqs == sorted(seqs)  # each one signs a head later than the last stored
    assert seqs[-1] == c.head(db) == 21 + rounds  # the final head is signed
    report = c.verify(db, signer)
    assert report.ok, report.summary()
    assert report.checkpoints_matched == len(rows)
    assert all(r.anchor for r in rows)
    published = read_checkpoints(anchors)
    assert sorted({cp.seq for cp in published}) == seqs
    assert all(KeyRing([signer.public_key]).problem(cp) is None for cp in published)
