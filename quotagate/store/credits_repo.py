"""Prepaid credits and the ledger trail.

A credit is a ledger entry of kind ``credit`` with ``ref = "<scope_type>:<scope_id>"`` and a positive
``amount_nanos``, appended to the organization's hash chain: the same rows
:class:`quotagate.store.baseline.StoreBaseline` reads to seed credit balances. Usage debits are the
``usage`` entries the usage writer appends; together they are the trail.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quotagate.errors import ConfigError
from quotagate.money import MAX_NANOS
from quotagate.store.audit import record_admin_action
from quotagate.store.ledger_repo import NewEntry, append_entries
from quotagate.store.paging_repo import keyset_page
from quotagate.store.quotas_repo import scope_org
from quotagate.store.tables import LedgerEntry
from quotagate.store.tenancy_repo import find_org

CREDIT_SCOPES = ("organization", "project", "client", "key")


def add_credit(
    session: Session,
    *,
    scope_type: str,
    scope_id: str,
    amount_nanos: int,
    note: str | None,
    scope: str | None,
    actor: str,
) -> dict[str, Any]:
    """Append the credit to the scope's organization chain (the caller's transaction must be IMMEDIATE on SQLite)."""
    if not 0 < amount_nanos < MAX_NANOS:
        raise ConfigError(f"a credit must be above 0 and below {MAX_NANOS} nanos")
    org_id, canonical = scope_org(session, scope_type, scope_id, scope)
    credit_id = f"{scope_type}:{canonical}"
    now = datetime.now(UTC)
    data = {"scope_type": scope_type, "scope_id": canonical, "note": note, "actor": actor}
    [row] = append_entries(session, org_id, [NewEntry("credit", credit_id, amount_nanos, data)], now)
    record_admin_action(
        session,
        actor=actor,
        action="credit.add",
        target_type="credit",
        target_id=credit_id,
        organization_id=org_id,
        after={"amount_nanos": amount_nanos, "seq": row.seq, "note": note},
        at=now,
    )
    entry_id = session.scalar(
        select(LedgerEntry.id).where(LedgerEntry.organization_id == org_id, LedgerEntry.seq == row.seq)
    )
    return {
        "id": entry_id,
        "organization_id": org_id,
        "scope_type": scope_type,
        "scope_id": canonical,
        "credit_id": credit_id,
        "amount_nanos": amount_nanos,
        "seq": row.seq,
        "note": note,
        "recorded_at": now,
        "hash": row.hash,
    }


def entry_json(e: LedgerEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "organization_id": e.organization_id,
        "seq": e.seq,
        "kind": e.kind,
        "ref": e.ref,
        "amount_nanos": e.amount_nanos,
        "recorded_at": e.recorded_at,
        "data": json.loads(e.body).get("data", {}),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def ledger_page(
    session: Session,
    scope: str | None,
    *,
    organization: str | None = None,
    kind: str | None = None,
    ref: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int | None = None,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int | None]:
    """Entries in append order (by row id), oldest first."""
    stmt = select(LedgerEntry)
    if scope is not None:
        stmt = stmt.where(LedgerEntry.organization_id == scope)
    if organization is not None:
        stmt = stmt.where(LedgerEntry.organization_id == find_org(session, organization, scope).id)
    if kind is not None:
        stmt = stmt.where(LedgerEntry.kind == kind)
    if ref is not None:
        stmt = stmt.where(LedgerEntry.ref == ref)
    if since is not None:
        stmt = stmt.where(LedgerEntry.recorded_at >= since)
    if until is not None:
        stmt = stmt.where(LedgerEntry.recorded_at < until)
    rows, last = keyset_page(session, stmt, LedgerEntry.id, after, limit)
    return [entry_json(r) for r in rows], last


def loaded_credits(session: Session, org_id: str, credit_ids: list[str]) -> dict[str, int]:
    """Total credits ever loaded per credit id, for the ids that have any."""
    rows = session.execute(
        select(LedgerEntry.ref, func.sum(LedgerEntry.amount_nanos))
        .where(LedgerEntry.organization_id == org_id, LedgerEntry.kind == "credit", LedgerEntry.ref.in_(credit_ids))
        .group_by(LedgerEntry.ref)
    )
    return {str(ref): int(total) for ref, total in rows}
