"""The database side of ledger verification and export: rows streamed to the pure verifier.

Rows are read in keyset pages by (organization_id, seq), the unique index, so memory stays flat on chains
of any length. The driver hands back the body's bytes and the time stamp already in the body's text form,
so the verifier compares them without per-row conversions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, union
from sqlalchemy.orm import Session

from quotagate.errors import ConfigError, NotFoundError
from quotagate.ledger.checkpoint import Checkpoint, KeyRing, iso, key_id, public_pem
from quotagate.ledger.export import (
    CHECKPOINTS,
    ENTRIES,
    MANIFEST,
    PUBLIC_KEY,
    README,
    entry_line,
    export_manifest,
    readme,
)
from quotagate.ledger.verify import GENESIS_ANCHOR, Anchor, ChainReport, Row, verify_chain
from quotagate.store.database import Database
from quotagate.store.tables import LedgerCheckpoint, LedgerEntry, Organization

PAGE = 10_000
# recorded_at as the body writes it (ISO 8601, microseconds, +00:00) and the body as bytes.
_ROWS = {
    "sqlite": "SELECT seq, kind, ref, amount_nanos, replace(recorded_at, ' ', 'T') || '+00:00', "
    "CAST(body AS BLOB), prev_hash, hash FROM ledger_entries "
    "WHERE organization_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
    "postgresql": "SELECT seq, kind, ref, amount_nanos, "
    "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00', "
    "convert_to(body, 'UTF8'), prev_hash, hash FROM ledger_entries "
    "WHERE organization_id = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
}


def iter_rows(session: Session, org: str, *, after: int = 0, upto: int | None = None) -> Iterator[Row]:
    """The chain's rows with after < seq <= upto, in seq order, a page at a time, in the session's
    transaction. The driver's cursor is used directly: its plain tuples are the verifier's rows, where
    SQLAlchemy's result rows would cost more than the verification itself."""
    dialect = session.get_bind().dialect.name
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    # psycopg's binary protocol hands bytea over as bytes; in text mode it is hex, 3x slower to read.
    cursor = raw.cursor(binary=True) if dialect == "postgresql" else raw.cursor()
    limit = upto if upto is not None else 2**62

    def page_after(seq: int) -> list[Row]:
        cursor.execute(_ROWS[dialect], (org, seq, limit, PAGE))
        return cast("list[Row]", cursor.fetchall())  # both drivers return a list of plain tuples

    try:
        if dialect != "postgresql":
            # SQLite runs in this process and releases the GIL for every row it steps: a reader thread
            # would only fight the caller for the GIL.
            while True:
                page = page_after(after)
                yield from page
                if len(page) < PAGE:
                    return
                after = page[-1][0]
        # PostgreSQL: the server prepares and sends the next page while the caller works through this
        # one (psycopg waits for it without the GIL). The connection is used by one thread at a time.
        with ThreadPoolExecutor(1, thread_name_prefix="ledger-read") as reader:
            ahead = reader.submit(page_after, after)
            while True:
                page = ahead.result()
                if len(page) == PAGE:
                    ahead = reader.submit(page_after, page[-1][0])
                yield from page
                if len(page) < PAGE:
                    return
    finally:
        cursor.close()


def checkpoint_of(row: LedgerCheckpoint) -> Checkpoint:
    return Checkpoint(row.organization_id, row.seq, row.hash, iso(row.signed_at), row.key_id, row.signature)


def stored_checkpoints(session: Session, org: str) -> list[Checkpoint]:
    rows = session.scalars(
        select(LedgerCheckpoint).where(LedgerCheckpoint.organization_id == org).order_by(LedgerCheckpoint.seq)
    )
    return [checkpoint_of(r) for r in rows]


def chain_orgs(session: Session) -> list[str]:
    """Every chain with entries or checkpoints (a chain whose rows were all deleted still has checkpoints)."""
    ids = union(select(LedgerEntry.organization_id).distinct(), select(LedgerCheckpoint.organization_id).distinct())
    return sorted(session.scalars(select(ids.subquery().c[0])))


def resolve_chain(session: Session, name: str) -> str:
    """A chain id from an organization id or slug (or `_global`)."""
    if name in chain_orgs(session):
        return name
    org_id = session.scalar(select(Organization.id).where((Organization.slug == name) | (Organization.id == name)))
    if org_id is None:
        raise NotFoundError(f"no ledger chain or organization {name!r}")
    return org_id


def verify_org(session: Session, org: str, keys: KeyRing, extra_checkpoints: Iterable[Checkpoint] = ()) -> ChainReport:
    """Verify one chain from genesis against its stored checkpoints and any given ones."""
    checkpoints = [*stored_checkpoints(session, org), *(cp for cp in extra_checkpoints if cp.org == org)]
    return verify_chain(org, iter_rows(session, org), keys=keys, checkpoints=checkpoints)


def export_org(
    db: Database, org: str, public: Ed25519PublicKey, out: Path, since: datetime | None = None
) -> dict[str, Any]:
    """Write the chain (from the checkpoint before `since`, or genesis) as an audit export into `out`."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; export into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    with db.read() as session:
        head = session.scalar(select(func.max(LedgerEntry.seq)).where(LedgerEntry.organization_id == org)) or 0
        # Only the current key's checkpoints: the export carries that one public key.
        signer = key_id(public)
        checkpoints = [cp for cp in stored_checkpoints(session, org) if cp.seq <= head and cp.key_id == signer]
        start = _export_start(session, org, checkpoints, head, since)
        exported = [cp for cp in checkpoints if cp.seq >= start.seq]
        with (out / ENTRIES).open("wb") as f:
            for row in iter_rows(session, org, after=start.seq, upto=head):
                f.write(entry_line(row))
    (out / CHECKPOINTS).write_bytes(b"".join(orjson.dumps(cp.to_json()) + b"\n" for cp in exported))
    (out / PUBLIC_KEY).write_bytes(public_pem(public))
    manifest = export_manifest(
        org=org,
        first_seq=start.seq + 1,
        last_seq=head,
        start_hash=start.hash,
        checkpoints=len(exported),
        public=public,
        at=iso(datetime.now(UTC)),
    )
    (out / MANIFEST).write_text(orjson.dumps(manifest, option=orjson.OPT_INDENT_2).decode() + "\n")
    (out / README).write_text(readme(manifest))
    for name in (ENTRIES, CHECKPOINTS, PUBLIC_KEY, MANIFEST, README):
        os.chmod(out / name, 0o644)
    return manifest


def _export_start(
    session: Session, org: str, checkpoints: list[Checkpoint], head: int, since: datetime | None
) -> Anchor:
    """Genesis, or the newest checkpoint before the first entry at or after `since`: the export's first
    link is then signed too."""
    if since is None:
        return GENESIS_ANCHOR
    first = session.scalar(
        select(func.min(LedgerEntry.seq)).where(LedgerEntry.organization_id == org, LedgerEntry.recorded_at >= since)
    )
    before = [cp for cp in checkpoints if cp.seq < (first or head + 1)]
    return Anchor(before[-1].seq, before[-1].hash) if before else GENESIS_ANCHOR
