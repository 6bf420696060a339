"""Usage reports: sums of usage events grouped by organization, project, client, key, model, day, actor.

Totals are sums of the same integer nanos the ledger debits, so a report equals its events exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal, select
from sqlalchemy.orm import Session

from quotagate.store.tables import Client, Organization, Project, UsageEvent

GROUPS = (
    "org",
    "project",
    "client",
    "key",
    "model",
    "provider",
    "day",
    "status",
    "decision",
    "reason",
    "actor_user",
    "actor_team",
    "actor_app",
)
MEASURES = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
)


@dataclass(frozen=True)
class ReportQuery:
    group_by: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    org_id: str | None = None
    project_id: str | None = None
    client_id: str | None = None
    key_id: str | None = None
    include_denied: bool = False


@dataclass
class Report:
    group_by: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)


def _day(session: Session) -> ColumnElement[str]:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", UsageEvent.started_at), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", UsageEvent.started_at)


def usage_report(session: Session, q: ReportQuery) -> Report:
    unknown = set(q.group_by) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown group(s) {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    dims: dict[str, ColumnElement[Any]] = {
        "org": func.coalesce(Organization.slug, UsageEvent.organization_id, literal("-")),
        "project": func.coalesce(Project.slug, UsageEvent.project_id, literal("-")),
        "client": func.coalesce(Client.name, UsageEvent.client_id, literal("-")),
        "key": func.coalesce(UsageEvent.key_id, literal("-")),
        "model": func.coalesce(UsageEvent.model_served, UsageEvent.model_requested, literal("-")),
        "provider": func.coalesce(UsageEvent.provider, literal("-")),
        "day": _day(session),
        "status": UsageEvent.status.expression,
        "decision": UsageEvent.decision.expression,
        "reason": func.coalesce(UsageEvent.deny_reason, literal("-")),
        # Verified actor attribution (signed X-Quotagate-Actor), a tag of the event; "-" when none.
        "actor_user": func.coalesce(UsageEvent.tags["actor.user"].as_string(), literal("-")),
        "actor_team": func.coalesce(UsageEvent.tags["actor.team"].as_string(), literal("-")),
        "actor_app": func.coalesce(UsageEvent.tags["actor.app"].as_string(), literal("-")),
    }
    measures = [
        func.count().label("requests"),
        *(func.coalesce(func.sum(getattr(UsageEvent, m)), 0).label(m) for m in MEASURES[1:]),
    ]
    chosen = [dims[g].label(g) for g in q.group_by]
    stmt = (
        select(*chosen, *measures)
        .select_from(UsageEvent)
        .outerjoin(Organization, Organization.id == UsageEvent.organization_id)
        .outerjoin(Project, Project.id == UsageEvent.project_id)
        .outerjoin(Client, Client.id == UsageEvent.client_id)
    )
    if not q.include_denied:
        stmt = stmt.where(UsageEvent.decision == "allowed")
    if q.since is not None:
        stmt = stmt.where(UsageEvent.started_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(UsageEvent.started_at < q.until)
    for column, value in (
        (UsageEvent.organization_id, q.org_id),
        (UsageEvent.project_id, q.project_id),
        (UsageEvent.client_id, q.client_id),
        (UsageEvent.key_id, q.key_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if chosen:
        stmt = stmt.group_by(*chosen).order_by(*chosen)
    report = Report(group_by=q.group_by)
    totals = dict.fromkeys(MEASURES, 0)
    for row in session.execute(stmt).mappings():
        item = {g: row[g] for g in q.group_by}
        for m in MEASURES:
            item[m] = int(row[m] or 0)
            totals[m] += item[m]
        if item["requests"]:
            report.rows.append(item)
    report.totals = totals
    return report


def resolve_org(session: Session, org: str) -> str | None:
    """An organization id from a slug or an id."""
    return session.scalar(select(Organization.id).where((Organization.slug == org) | (Organization.id == org)))
