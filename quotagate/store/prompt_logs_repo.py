"""Logged prompt content: merged per request (request and response sides may be different processes),
purged past retention with an audit event (and its ledger entry) saying what went."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from quotagate.store.audit import record_admin_action
from quotagate.store.ledger_repo import lock_org_chain
from quotagate.store.tables import PromptLog

PURGE_ACTOR = "system:prompt-retention"
PURGE_BATCH = 5000


@dataclass
class Content:
    """One request's content as captured (already redacted when the policy says so)."""

    request_id: str
    org_id: str
    project_id: str
    mode: str
    at: datetime
    retention_days: int
    request_body: str | None = None
    response_text: str | None = None
    redactions: dict[str, int] = field(default_factory=dict)


def save_content(session: Session, items: list[Content]) -> None:
    """Insert or complete each request's row. Two processes inserting the same new row make one of them
    fail with an IntegrityError; the caller retries the batch, which then finds the row."""
    merged: dict[str, Content] = {}
    for item in items:
        prior = merged.get(item.request_id)
        merged[item.request_id] = item if prior is None else _merge(prior, item)
    existing = {
        row.request_id: row for row in session.scalars(select(PromptLog).where(PromptLog.request_id.in_(list(merged))))
    }
    for rid, c in merged.items():
        row = existing.get(rid)
        if row is None:
            session.add(
                PromptLog(
                    request_id=rid,
                    organization_id=c.org_id,
                    project_id=c.project_id,
                    mode=c.mode,
                    created_at=c.at,
                    expires_at=c.at + timedelta(days=c.retention_days),
                    request_body=c.request_body,
                    response_text=c.response_text,
                    redactions=c.redactions,
                )
            )
            continue
        if c.request_body is not None:
            row.request_body = c.request_body
        if c.response_text is not None:
            row.response_text = c.response_text
        row.redactions = _add(row.redactions or {}, c.redactions)
    session.flush()


def _merge(a: Content, b: Content) -> Content:
    return Content(
        a.request_id,
        a.org_id,
        a.project_id,
        a.mode,
        min(a.at, b.at),
        a.retention_days,
        b.request_body if b.request_body is not None else a.request_body,
        b.response_text if b.response_text is not None else a.response_text,
        _add(a.redactions, b.redactions),
    )


def _add(a: Mapping[str, Any], b: Mapping[str, int]) -> dict[str, int]:
    out = {k: int(v) for k, v in a.items()}
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def purge_expired(session: Session, now: datetime, retention_days: Mapping[str, int]) -> dict[str, int]:
    """Delete content past its expiry, or older than its project's current retention (a shortened
    retention applies to what is already stored). One audit event per organization: how many rows, the
    oldest and newest capture times and a SHA-256 of the purged request ids. Returns org -> rows."""
    expired = [PromptLog.expires_at <= now]
    for project_id, days in retention_days.items():
        expired.append(and_(PromptLog.project_id == project_id, PromptLog.created_at <= now - timedelta(days=days)))
    rows = session.execute(
        select(PromptLog.request_id, PromptLog.organization_id, PromptLog.created_at)
        .where(or_(*expired))
        .order_by(PromptLog.created_at)
        .limit(PURGE_BATCH)
    ).all()
    if not rows:
        return {}
    by_org: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for rid, org, created in rows:
        by_org[org].append((rid, created))
    # Chains first (sorted, as every appender does), then the deletes (see lock_org_chain).
    for org in sorted(by_org):
        lock_org_chain(session, org)
    counts: dict[str, int] = {}
    for org, items in sorted(by_org.items()):
        ids = sorted(rid for rid, _ in items)
        # The rows deleted here (another process may have purged some first): only those are recorded.
        deleted = list(
            session.scalars(delete(PromptLog).where(PromptLog.request_id.in_(ids)).returning(PromptLog.request_id))
        )
        if not deleted:
            continue
        deleted.sort()
        gone = set(deleted)
        times = [created for rid, created in items if rid in gone]
        record_admin_action(
            session,
            actor=PURGE_ACTOR,
            action="prompt_logs.purge",
            target_type="prompt_logs",
            target_id=None,
            organization_id=org,
            after={
                "purged": len(deleted),
                "oldest": min(times).astimezone(UTC).isoformat(),
                "newest": max(times).astimezone(UTC).isoformat(),
                "request_ids_sha256": hashlib.sha256("\n".join(deleted).encode()).hexdigest(),
            },
            at=now,
        )
        counts[org] = len(deleted)
    return counts
