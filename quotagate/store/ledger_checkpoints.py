"""Signing chain heads: periodically in every gateway process (`Checkpointer.run`) and on demand.

A head is signed only after the entries since the previous checkpoint of the same key verify, so a
checkpoint never blesses tampering. Signing happens outside any write lock; the row is inserted in a
short transaction that re-checks under a per-organization lock, so processes racing on the same head
store one checkpoint. Publishing to the anchor sinks happens after commit, for every checkpoint still
unanchored (a sink that was down is retried next round); a checkpoint published twice is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from quotagate.ledger.anchors import AnchorSink, sinks_from_settings
from quotagate.ledger.checkpoint import Checkpoint, KeyRing, Signer, signer_from_settings
from quotagate.ledger.verify import GENESIS_ANCHOR, Anchor, ChainReport, verify_chain
from quotagate.settings import Settings
from quotagate.store.database import Database
from quotagate.store.ledger_audit import chain_orgs, checkpoint_of, iter_rows
from quotagate.store.ledger_repo import chain_head
from quotagate.store.tables import LedgerCheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    org: str
    status: str  # signed | unchanged | empty | refused
    checkpoint: Checkpoint | None = None
    report: ChainReport | None = None  # why a head was refused


class Checkpointer:
    def __init__(self, db: Database, signer: Signer, sinks: Sequence[AnchorSink], interval_s: float) -> None:
        self.db = db
        self.signer = signer
        self.sinks = list(sinks)
        self.interval_s = interval_s
        self._keys = KeyRing([signer.public_key])

    def checkpoint(self, orgs: Iterable[str] | None = None, *, force: bool = False) -> list[Outcome]:
        """Sign the head of each chain (all when `orgs` is None) that moved since its last checkpoint, or
        every head with `force`; then publish whatever is unanchored."""
        if orgs is None:
            with self.db.read() as session:
                orgs = chain_orgs(session)
        outcomes = [self._checkpoint_org(org, force) for org in sorted(orgs)]
        self.publish_pending()
        return outcomes

    def _checkpoint_org(self, org: str, force: bool) -> Outcome:
        with self.db.read() as session:
            head_seq, _ = chain_head(session, org)
            last = self._last_own(session, org)
            if head_seq == 0 and last is None:
                return Outcome(org, "empty")
            if last is not None and last.seq == head_seq and not force:
                return Outcome(org, "unchanged", last)
            start = Anchor(last.seq, last.hash) if last is not None and last.seq <= head_seq else GENESIS_ANCHOR
            report = verify_chain(
                org,
                iter_rows(session, org, after=start.seq, upto=head_seq),
                keys=self._keys,
                checkpoints=[last] if last is not None else [],
                start=start,
            )
        if not report.ok:
            log.error("ledger chain %s does not verify; its head is not signed:\n%s", org, report.summary())
            return Outcome(org, "refused", report=report)
        checkpoint = self.signer.sign(org, report.head_seq, report.head_hash)
        with self.db.transaction() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 7))"), {"key": f"checkpoint:{org}"}
                )
            latest = self._last_own(session, org)
            if latest is not None and latest.seq >= checkpoint.seq and not force:
                return Outcome(org, "unchanged", latest)
            session.add(
                LedgerCheckpoint(
                    organization_id=org,
                    seq=checkpoint.seq,
                    hash=checkpoint.hash,
                    signed_at=datetime.fromisoformat(checkpoint.signed_at),
                    key_id=checkpoint.key_id,
                    signature=checkpoint.signature,
                )
            )
        return Outcome(org, "signed", checkpoint)

    def _last_own(self, session: Session, org: str) -> Checkpoint | None:
        """The newest checkpoint of this signer's key whose signature verifies: a forged row is skipped
        here (and reported by verify), so it cannot stall signing."""
        rows = session.scalars(
            select(LedgerCheckpoint)
            .where(LedgerCheckpoint.organization_id == org, LedgerCheckpoint.key_id == self.signer.key_id)
            .order_by(LedgerCheckpoint.seq.desc(), LedgerCheckpoint.id.desc())
            .limit(64)  # past that many forged rows, verifying from genesis is the sane fallback
        )
        return next((cp for cp in map(checkpoint_of, rows) if self._keys.problem(cp) is None), None)

    def publish_pending(self) -> int:
        """Write every valid checkpoint of this key no sink has taken yet to all sinks; returns how many."""
        with self.db.read() as session:
            pending = list(
                session.scalars(
                    select(LedgerCheckpoint)
                    .where(LedgerCheckpoint.anchor.is_(None), LedgerCheckpoint.key_id == self.signer.key_id)
                    .order_by(LedgerCheckpoint.id)
                )
            )
        published = 0
        for row in pending:
            checkpoint = checkpoint_of(row)
            if (why := self._keys.problem(checkpoint)) is not None:
                log.error("not publishing a stored checkpoint that does not verify: %s", why)
                continue
            try:
                anchor = " ".join(sink.write(checkpoint) for sink in self.sinks)
            except OSError as exc:
                log.warning(
                    "checkpoint %s/%d not anchored yet (%s); retrying next round", row.organization_id, row.seq, exc
                )
                continue
            with self.db.transaction() as session:
                session.execute(update(LedgerCheckpoint).where(LedgerCheckpoint.id == row.id).values(anchor=anchor))
            published += 1
        return published

    async def run(self) -> None:
        """Sign moved heads every `interval_s` until cancelled; a failing round is logged and retried."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:
                log.exception("ledger checkpoint round failed; retrying in %.0fs", self.interval_s)


def open_checkpointer(settings: Settings, db: Database) -> Checkpointer | None:
    """The gateway's checkpointer; None when periodic checkpoints are off (interval 0).

    Raises ConfigError on PostgreSQL without a configured signing key."""
    if settings.ledger_checkpoint_interval_s == 0:
        return None
    return Checkpointer(
        db,
        signer_from_settings(settings, db.dialect),
        sinks_from_settings(settings),
        settings.ledger_checkpoint_interval_s,
    )
