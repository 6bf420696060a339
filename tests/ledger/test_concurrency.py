"""Several OS processes appending to one organization's chain at once produce one valid chain."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

from sqlalchemy import func, select

from quotagate.ledger.checkpoint import KeyRing
from quotagate.store.database import Database
from quotagate.store.ledger_audit import verify_org
from quotagate.store.tables import LedgerEntry
from tests.conftest import REPO
from tests.ledger.chains import ORG

PROCESSES, TRANSACTIONS, BATCH = 4, 30, 5

WORKER = """
import sys, time
from quotagate.store.audit import record_admin_action
from quotagate.store.database import Database
from quotagate.store.ledger_repo import NewEntry, append_entries

url, worker, start_at, transactions, batch = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
db = Database(url, auto_upgrade=False)
time.sleep(max(0.0, start_at - time.time()))
for t in range(transactions):
    with db.transaction() as session:
        items = [NewEntry("usage", f"{worker}-{t}-{k}", -1000 - k, {"worker": worker}) for k in range(batch)]
        append_entries(session, "acme", items)
        if t % 3 == 0:
            record_admin_action(session, actor=worker, action="test.poke", target_type="t", target_id=str(t),
                                organization_id="acme")
db.close()
"""


def test_concurrent_writers_make_one_contiguous_chain(database_url: str) -> None:
    Database(database_url).close()  # migrated before the workers start
    start_at = time.time() + 3.0  # every worker has imported and connected by then
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, database_url, f"w{i}", str(start_at), str(TRANSACTIONS), str(BATCH)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err

    admin_per_worker = len(range(0, TRANSACTIONS, 3))
    expected = PROCESSES * (TRANSACTIONS * BATCH + admin_per_worker)
    db = Database(database_url)
    with db.read() as session:
        report = verify_org(session, ORG, KeyRing([]))
        assert report.ok, report.summary()
        assert (report.entries, report.head_seq) == (expected, expected)
        seqs = list(
            session.scalars(select(LedgerEntry.seq).where(LedgerEntry.organization_id == ORG).order_by(LedgerEntry.seq))
        )
        assert seqs == list(range(1, expected + 1))
        # Transactions interleaved: the workers really raced for the chain.
        refs = session.scalars(select(LedgerEntry.ref).where(LedgerEntry.kind == "usage").order_by(LedgerEntry.seq))
        owners = [ref.split("-")[0] for ref in refs]
        switches = sum(1 for a, b in itertools.pairwise(owners) if a != b)
        assert switches >= PROCESSES - 1
        assert (
            session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "admin"))
            == PROCESSES * admin_per_worker
        )
    db.close()
