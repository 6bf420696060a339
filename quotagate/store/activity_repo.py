"""What the dashboard reads from the usage events: time buckets, breakdowns, recent requests, last use of keys.

Every query is narrowed by an :class:`ActivityScope` (an organization, and within it optionally a project,
client or key), so an organization admin or a gateway key only ever reads its own rows. Costs are sums of
the same integer nanos the ledger debits; tokens count every class (input + cached + cache-write, output).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, case, func, literal, select, tuple_
from sqlalchemy.orm import Session

from quotagate.store.api_keys_repo import list_keys
from quotagate.store.tables import Client, GatewayKey, LedgerEntry, Project, UsageEvent

S = TypeVar("S", bound=Select[*tuple[Any, ...]])
Bucket = Literal["hour", "day"]
Dimension = Literal["model", "project", "client", "key", "reason", "actor_user", "actor_team", "actor_app"]
BUCKET_SPAN = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass(frozen=True)
class ActivityScope:
    """Which events a caller may read; None: not narrowed on that column (org None: every organization)."""

    org_id: str | None = None
    project_id: str | None = None
    client_id: str | None = None
    key_id: str | None = None


def _scoped(stmt: S, scope: ActivityScope) -> S:
    for column, value in (
        (UsageEvent.organization_id, scope.org_id),
        (UsageEvent.project_id, scope.project_id),
        (UsageEvent.client_id, scope.client_id),
        (UsageEvent.key_id, scope.key_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt


_ALLOWED = UsageEvent.decision == "allowed"


def _measures() -> list[ColumnElement[Any]]:
    """Admitted requests and their figures, and refused requests, in one pass over the rows."""

    def allowed_sum(column: SQLColumnExpression[int]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((_ALLOWED, column), else_=0)), 0)

    input_all = UsageEvent.input_tokens + UsageEvent.cached_input_tokens + UsageEvent.cache_write_tokens
    return [
        allowed_sum(literal(1)).label("requests"),
        func.coalesce(func.sum(case((_ALLOWED, 0), else_=1)), 0).label("denied"),
        allowed_sum(input_all).label("input_tokens"),
        allowed_sum(UsageEvent.output_tokens).label("output_tokens"),
        allowed_sum(UsageEvent.cost_nanos).label("cost_nanos"),
    ]


def _figures(row: Any) -> dict[str, int]:
    return {
        "requests": int(row.requests),
        "denied": int(row.denied),
        "input_tokens": int(row.input_tokens),
        "output_tokens": int(row.output_tokens),
        "cost_nanos": int(row.cost_nanos),
    }


def _bucket_of(session: Session, bucket: Bucket) -> ColumnElement[str]:
    """The UTC hour or day an event started in, as text that sorts in time order."""
    if session.get_bind().dialect.name == "postgresql":
        fmt = "YYYY-MM-DD HH24" if bucket == "hour" else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", UsageEvent.started_at), fmt)
    return func.strftime("%Y-%m-%d %H" if bucket == "hour" else "%Y-%m-%d", UsageEvent.started_at)


def _floor(when: datetime, bucket: Bucket) -> datetime:
    when = when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return when.replace(hour=0) if bucket == "day" else when


def series(
    session: Session, scope: ActivityScope, since: datetime, until: datetime, bucket: Bucket
) -> list[dict[str, Any]]:
    """One point per UTC hour or day from the bucket holding `since` to the one holding `until`, empty ones
    included (a chart must show the gaps)."""
    key = _bucket_of(session, bucket).label("bucket")
    stmt = select(key, *_measures()).where(UsageEvent.started_at >= since, UsageEvent.started_at < until)
    found = {row.bucket: _figures(row) for row in session.execute(_scoped(stmt, scope).group_by(key))}
    empty = dict.fromkeys(("requests", "denied", "input_tokens", "output_tokens", "cost_nanos"), 0)
    points = []
    start, step = _floor(since, bucket), BUCKET_SPAN[bucket]
    while start < until:
        label = start.strftime("%Y-%m-%d %H" if bucket == "hour" else "%Y-%m-%d")
        points.append({"start": start, **found.get(label, empty)})
        start += step
    return points


def totals(session: Session, scope: ActivityScope, since: datetime, until: datetime) -> dict[str, Any]:
    """The window's figures, with the mean latency of admitted requests (None: none measured)."""
    latency = func.avg(case((_ALLOWED, UsageEvent.latency_ms), else_=None)).label("latency")
    stmt = select(*_measures(), latency).where(UsageEvent.started_at >= since, UsageEvent.started_at < until)
    row = session.execute(_scoped(stmt, scope)).one()
    return {**_figures(row), "avg_latency_ms": None if row.latency is None else round(float(row.latency))}


def _dimension(dimension: Dimension) -> SQLColumnExpression[Any]:
    columns: dict[str, SQLColumnExpression[Any]] = {
        "model": func.coalesce(UsageEvent.model_served, UsageEvent.model_requested),
        "project": UsageEvent.project_id,
        "client": UsageEvent.client_id,
        "key": UsageEvent.key_id,
        "reason": UsageEvent.deny_reason,
        # Verified actor attribution (a signed X-Quotagate-Actor) is a tag of the event; unattributed: NULL.
        "actor_user": UsageEvent.tags["actor.user"].as_string(),
        "actor_team": UsageEvent.tags["actor.team"].as_string(),
        "actor_app": UsageEvent.tags["actor.app"].as_string(),
    }
    return columns[dimension]


def breakdown(
    session: Session, scope: ActivityScope, since: datetime, until: datetime, dimension: Dimension, limit: int
) -> list[dict[str, Any]]:
    """The window's figures per model, project, client, key, refusal reason or actor field, largest spend first
    (refusal reasons: most refused first); rows with no id (e.g. a refused unknown key has no project, an
    unattributed request no actor) are left out."""
    dim: ColumnElement[Any] = _dimension(dimension).label("id")
    stmt = select(dim, *_measures()).where(
        UsageEvent.started_at >= since, UsageEvent.started_at < until, dim.is_not(None)
    )
    if dimension == "reason":
        stmt = stmt.where(UsageEvent.decision == "denied")
    measures = {c.name: c for c in _measures()}
    order = [measures["denied"].desc()] if dimension == "reason" else [measures["cost_nanos"].desc()]
    stmt = _scoped(stmt, scope).group_by(dim).order_by(*order, measures["requests"].desc(), dim).limit(limit)
    rows = [{"id": row.id, **_figures(row)} for row in session.execute(stmt)]
    _name(session, dimension, rows)
    return rows


def _name(session: Session, dimension: Dimension, rows: list[dict[str, Any]]) -> None:
    """Display names beside ids, read from the store (disabled objects keep their history and their name)."""
    ids = [r["id"] for r in rows]
    names: dict[str, dict[str, Any]] = {}
    if dimension == "project":
        for p in session.execute(select(Project.id, Project.slug, Project.name).where(Project.id.in_(ids))):
            names[p.id] = {"name": p.name, "slug": p.slug}
    elif dimension == "client":
        for c in session.execute(select(Client.id, Client.name, Client.client_type).where(Client.id.in_(ids))):
            names[c.id] = {"name": c.name, "client_type": c.client_type}
    elif dimension == "key":
        stmt = (
            select(GatewayKey.key_id, GatewayKey.client_id, Client.name, Project.slug)
            .join(Client, Client.id == GatewayKey.client_id)
            .join(Project, Project.id == GatewayKey.project_id)
            .where(GatewayKey.key_id.in_(ids))
        )
        for k in session.execute(stmt):
            names[k.key_id] = {"client_id": k.client_id, "client_name": k.name, "project": k.slug}
    for row in rows:
        row.update(names.get(row["id"], {}))


# (started_at, request_id): a page of recent requests continues strictly before this pair.
RequestCursor = tuple[datetime, str]


def recent_requests(
    session: Session,
    scope: ActivityScope,
    *,
    limit: int,
    before: RequestCursor | None = None,
    decision: str | None = None,
) -> tuple[list[dict[str, Any]], RequestCursor | None]:
    """The latest requests, newest first, and the cursor of the next (older) page (None: no more)."""
    stmt = _scoped(
        select(UsageEvent, Client.name.label("client_name"), Project.slug.label("project"))
        .outerjoin(Client, Client.id == UsageEvent.client_id)
        .outerjoin(Project, Project.id == UsageEvent.project_id),
        scope,
    )
    if decision is not None:
        stmt = stmt.where(UsageEvent.decision == decision)
    if before is not None:
        stmt = stmt.where(tuple_(UsageEvent.started_at, UsageEvent.request_id) < tuple_(*before))
    stmt = stmt.order_by(UsageEvent.started_at.desc(), UsageEvent.request_id.desc()).limit(limit + 1)
    rows = session.execute(stmt).all()
    out = [_request(e, client_name, project) for e, client_name, project in rows[:limit]]
    last = rows[limit - 1][0] if len(rows) > limit else None
    return out, (last.started_at, last.request_id) if last is not None else None


def _request(e: UsageEvent, client_name: str | None, project: str | None) -> dict[str, Any]:
    return {
        "request_id": e.request_id,
        "started_at": e.started_at,
        "organization_id": e.organization_id,
        "project": project,
        "client_id": e.client_id,
        "client_name": client_name,
        "key_id": e.key_id,
        "provider": e.provider,
        "model": e.model_served or e.model_requested,
        "stream": e.stream,
        "status": e.status,
        "decision": e.decision,
        "deny_reason": e.deny_reason,
        "input_tokens": e.input_tokens + e.cached_input_tokens + e.cache_write_tokens,
        "output_tokens": e.output_tokens,
        "cost_nanos": e.cost_nanos,
        "latency_ms": e.latency_ms,
        "ttft_ms": e.ttft_ms,
        "actor": actor_of(e.tags),
    }


def actor_of(tags: dict[str, Any] | None) -> dict[str, str] | None:
    """The verified actor of an event (`actor.user` -> user, ...), None when it carries none."""
    fields = {k.removeprefix("actor."): str(v) for k, v in (tags or {}).items() if k.startswith("actor.")}
    return fields or None


def keys_page(
    session: Session, scope: str | None, *, organization: str | None, since: datetime, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of gateway keys (never secrets) with their client's name, project and activity."""
    keys, last = list_keys(session, scope, organization=organization, after=after, limit=limit)
    rows = [{**k, "id": k["key_id"]} for k in keys]
    _name(session, "key", rows)
    activity = _key_activity(session, [k["key_id"] for k in keys], since)
    idle = {"last_used_at": None, "requests": 0, "cost_nanos": 0}
    return [{**{n: v for n, v in r.items() if n != "id"}, **activity.get(r["key_id"], idle)} for r in rows], last


def _key_activity(session: Session, key_ids: list[str], since: datetime) -> dict[str, dict[str, Any]]:
    """Per key: its last request ever (the gateway never writes to the key table on the hot path, so this is
    where "last used" comes from) and its admitted requests and spend since `since`."""
    if not key_ids:
        return {}
    recent = and_(_ALLOWED, UsageEvent.started_at >= since)
    stmt = (
        select(
            UsageEvent.key_id,
            func.max(UsageEvent.started_at).label("last_used_at"),
            func.coalesce(func.sum(case((recent, 1), else_=0)), 0).label("requests"),
            func.coalesce(func.sum(case((recent, UsageEvent.cost_nanos), else_=0)), 0).label("cost_nanos"),
        )
        .where(UsageEvent.key_id.in_(key_ids))
        .group_by(UsageEvent.key_id)
    )
    return {
        row.key_id: {"last_used_at": row.last_used_at, "requests": int(row.requests), "cost_nanos": int(row.cost_nanos)}
        for row in session.execute(stmt)
    }


def credit_scopes(session: Session, org_id: str) -> dict[str, int]:
    """Credit ids (``<scope_type>:<scope_id>``) of an organization that were ever loaded, with the total."""
    stmt = (
        select(LedgerEntry.ref, func.sum(LedgerEntry.amount_nanos))
        .where(LedgerEntry.organization_id == org_id, LedgerEntry.kind == "credit", LedgerEntry.ref.is_not(None))
        .group_by(LedgerEntry.ref)
        .order_by(LedgerEntry.ref)
    )
    return {str(ref): int(total) for ref, total in session.execute(stmt)}
