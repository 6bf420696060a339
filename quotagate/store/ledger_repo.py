"""Appending to the per-organization hash chain, serialized per organization.

PostgreSQL: a transaction-scoped advisory lock per organization, so many gateway processes append
safely and organizations do not wait on each other. SQLite: the write transaction begins IMMEDIATE,
the single-writer lock (enforced: an append in any other transaction raises). Entries are appended in
batches (one lock and one head read per batch). A transaction locking several chains locks them in
sorted order, as the usage writer does, so two appenders never wait on each other in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from quotagate.ledger.chain import GENESIS, Entry, seal
from quotagate.store.tables import LedgerEntry


@dataclass(frozen=True, slots=True)
class NewEntry:
    kind: str
    ref: str | None
    amount_nanos: int
    data: dict[str, Any]


def lock_org_chain(session: Session, org_id: str) -> None:
    """Serialize appends to `org_id`'s chain until the transaction ends.

    Take it before writing other rows an appender also writes (gateway keys' last use): every appender
    then locks in the same order, chain first. Pending changes are not flushed by taking it."""
    if session.get_bind().dialect.name == "postgresql":
        with session.no_autoflush:
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:org, 7))"), {"org": f"ledger:{org_id}"}
            )
    elif not session.connection().get_execution_options().get("immediate"):
        # In a deferred SQLite transaction two processes can read the same head; the unique (org, seq)
        # constraint would then fail one of them at commit.
        raise RuntimeError("ledger appends on SQLite need an IMMEDIATE transaction: not transaction(immediate=False)")


def chain_head(session: Session, org_id: str) -> tuple[int, str]:
    row = session.execute(
        select(LedgerEntry.seq, LedgerEntry.hash)
        .where(LedgerEntry.organization_id == org_id)
        .order_by(LedgerEntry.seq.desc())
        .limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


@dataclass(frozen=True, slots=True)
class Appended:
    """A row append_entries wrote (its id is not read back: RETURNING would make SQLite insert row by row)."""

    seq: int
    hash: str


def append_entries(session: Session, org_id: str, items: list[NewEntry], now: datetime | None = None) -> list[Appended]:
    """Append `items` to the organization's chain in the caller's transaction; returns the new rows."""
    if not items:
        return []
    now = now or datetime.now(UTC)
    lock_org_chain(session, org_id)
    seq, prev = chain_head(session, org_id)
    stamp = now.astimezone(UTC).isoformat(timespec="microseconds")
    rows: list[dict[str, Any]] = []
    for item in items:
        seq += 1
        entry = Entry(org_id, seq, item.kind, item.ref, item.amount_nanos, stamp, item.data)
        body, digest = seal(entry, prev)
        rows.append(
            {
                "organization_id": org_id,
                "seq": seq,
                "kind": item.kind,
                "ref": item.ref,
                "amount_nanos": item.amount_nanos,
                "recorded_at": now,
                "body": body.decode(),
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    # One bulk INSERT (executemany), not the ORM's unit of work: the usage writer appends a batch at a time.
    session.execute(insert(LedgerEntry), rows)
    return [Appended(r["seq"], r["hash"]) for r in rows]
