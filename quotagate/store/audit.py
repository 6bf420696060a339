"""Admin audit events: who changed what, with before and after, each also a ledger entry.

The entry (kind ``admin``, ``ref`` ``audit:<event id>``, amount 0) is appended in the caller's
transaction to the organization's chain, or to the ``_global`` chain for actions that concern no
organization; on SQLite that transaction must be IMMEDIATE (`Database.transaction()`'s default).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from quotagate.ledger.chain import GLOBAL_CHAIN, json_safe
from quotagate.store.ledger_repo import NewEntry, append_entries, lock_org_chain
from quotagate.store.tables import AdminAuditEvent


def record_admin_action(
    session: Session,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | None,
    organization_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AdminAuditEvent:
    at = at or datetime.now(UTC)
    chain = organization_id or GLOBAL_CHAIN
    # The chain lock comes before the flush below writes the caller's pending rows (see lock_org_chain).
    lock_org_chain(session, chain)
    event = AdminAuditEvent(
        at=at,
        actor=actor,
        action=action,
        organization_id=organization_id,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
    )
    session.add(event)
    session.flush()  # the event's id is the entry's ref
    data = {
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "before": json_safe(before),
        "after": json_safe(after),
    }
    append_entries(session, chain, [NewEntry("admin", f"audit:{event.id}", 0, data)], at)
    return event
