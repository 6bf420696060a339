"""Admin audit events: who changed what, with before and after."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

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
    event = AdminAuditEvent(
        at=at or datetime.now(UTC),
        actor=actor,
        action=action,
        organization_id=organization_id,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
    )
    session.add(event)
    return event
