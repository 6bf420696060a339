"""Building and tampering with ledger chains in a real database, as an attacker with SQL access would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, insert, select, update

from quotagate.ledger.chain import Entry, link_hash, seal
from quotagate.ledger.checkpoint import KeyRing, Signer
from quotagate.ledger.verify import ChainReport
from quotagate.store.audit import record_admin_action
from quotagate.store.database import Database
from quotagate.store.ledger_audit import verify_org
from quotagate.store.ledger_repo import NewEntry, append_entries
from quotagate.store.tables import LedgerCheckpoint, LedgerEntry

ORG = "acme"
START = datetime(2026, 1, 1, tzinfo=UTC)


def usage(i: int) -> NewEntry:
    return NewEntry(
        "usage",
        f"req-{i:04d}",
        -(1_850_000 + i),
        {
            "model": "gpt-4o-mini",
            "tokens": {"input": 1000 + i, "output": 20},
            "cost": {"input": "0.00015", "output": "0.000012", "unit": "usd"},
        },
    )


def build_chain(db: Database, batches: int = 4, per_batch: int = 5, start: datetime = START) -> int:
    """`batches` transactions of usage entries a minute apart from `start`, an admin action in the middle;
    returns the head seq."""
    n = 0
    for b in range(batches):
        at = start + timedelta(minutes=b)
        with db.transaction() as session:
            append_entries(session, ORG, [usage(n + k) for k in range(per_batch)], at)
            if b == batches // 2:
                record_admin_action(
                    session,
                    actor="cli:test",
                    action="key.suspend",
                    target_type="gateway_key",
                    target_id="k1",
                    organization_id=ORG,
                    before={"status": "active"},
                    after={"status": "suspended"},
                    at=at,
                )
        n += per_batch
    return head(db)


def head(db: Database) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                select(LedgerEntry.seq)
                .where(LedgerEntry.organization_id == ORG)
                .order_by(LedgerEntry.seq.desc())
                .limit(1)
            )
            or 0
        )


def store_checkpoint(db: Database, signer: Signer, seq: int, digest: str) -> None:
    cp = signer.sign(ORG, seq, digest)
    with db.transaction() as session:
        session.add(
            LedgerCheckpoint(
                organization_id=ORG,
                seq=cp.seq,
                hash=cp.hash,
                signed_at=datetime.fromisoformat(cp.signed_at),
                key_id=cp.key_id,
                signature=cp.signature,
            )
        )


def row(db: Database, seq: int) -> LedgerEntry:
    with db.read() as session:
        found = session.scalars(
            select(LedgerEntry).where(LedgerEntry.organization_id == ORG, LedgerEntry.seq == seq)
        ).one()
        session.expunge(found)
        return found


def set_columns(db: Database, at: int, /, **values: Any) -> None:
    with db.transaction() as session:
        session.execute(
            update(LedgerEntry).where(LedgerEntry.organization_id == ORG, LedgerEntry.seq == at).values(**values)
        )


def delete_seqs(db: Database, *seqs: int) -> None:
    with db.transaction() as session:
        session.execute(delete(LedgerEntry).where(LedgerEntry.organization_id == ORG, LedgerEntry.seq.in_(seqs)))


def renumber(db: Database, first: int, last: int, by: int) -> None:
    """Shift the seq column of rows first..last by `by`, in an order the unique constraint allows."""
    order = range(last, first - 1, -1) if by > 0 else range(first, last + 1)
    for seq in order:
        set_columns(db, seq, seq=seq + by)


def insert_sealed(db: Database, seq: int, prev_hash: str, item: NewEntry) -> None:
    """A forged entry sealed properly after `prev_hash`, as an attacker who knows the format would."""
    stamp = START + timedelta(minutes=30)
    body, digest = seal(
        Entry(ORG, seq, item.kind, item.ref, item.amount_nanos, stamp.isoformat(timespec="microseconds"), item.data),
        prev_hash,
    )
    with db.transaction() as session:
        session.execute(
            insert(LedgerEntry).values(
                organization_id=ORG,
                seq=seq,
                kind=item.kind,
                ref=item.ref,
                amount_nanos=item.amount_nanos,
                recorded_at=stamp,
                body=body.decode(),
                prev_hash=prev_hash,
                hash=digest,
            )
        )


def reseal_from(db: Database, first: int) -> None:
    """Recompute prev_hash and hash of every row from `first` on: a rewrite that hides an edit."""
    prev = row(db, first).prev_hash
    for seq in range(first, head(db) + 1):
        digest = link_hash(prev, row(db, seq).body.encode())
        set_columns(db, seq, prev_hash=prev, hash=digest)
        prev = digest


def verify(db: Database, signer: Signer) -> ChainReport:
    with db.read() as session:
        return verify_org(session, ORG, KeyRing([signer.public_key]))


def new_signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())
