"""What the dashboard reads that the rest of the API does not answer: usage over time, breakdowns, recent
requests, an organization's caps and credits, and when each key was last used.

Two doors over the same queries: ``/admin/activity/*`` for admin tokens (an organization admin reads only
its organization; a global admin every one, or one with ``organization=``), and ``/api/activity/*`` for a
gateway key, which reads only its own requests. Money is exact: integer ``cost_nanos`` beside decimal
strings; refused requests are counted in ``denied`` and cost nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from quotagate.errors import BackendUnavailable
from quotagate.http.admin_keys import Key
from quotagate.http.auth import Admin, Gateway, organization_for
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError, Problem
from quotagate.http.models import Ref
from quotagate.http.money import amount
from quotagate.http.paging import Cursor, Limit, Page, decode, encode
from quotagate.http.portal import CreditBalance, Money, currency_of, has_limits, limit_check, limit_view
from quotagate.http.portal import Limit as LimitState
from quotagate.http.routing import JsonBodyRoute
from quotagate.http.sub_accounts import window_start
from quotagate.http.visibility import require_visible
from quotagate.policy import credit_id
from quotagate.store import activity_repo as repo
from quotagate.store.activity_repo import ActivityScope, Bucket, Dimension, RequestCursor
from quotagate.store.baseline import StoreBaseline
from quotagate.store.tenancy_repo import find_org

router = APIRouter(route_class=JsonBodyRoute, tags=["dashboard"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]

Window = Annotated[str, Query(max_length=8, description="e.g. 24h, 7d, 30d (at most 366d)")]
Top = Annotated[int, Query(ge=1, le=100, description="rows per breakdown, largest first")]
Organization = Annotated[Ref | None, Query(description="organization id or slug (a global admin's filter)")]
Filter = Annotated[Ref | None, Query()]
Decision = Literal["allowed", "denied"]
# Hourly points beyond a month are too many to draw or read.
MAX_HOURLY = timedelta(days=31)
BREAKDOWNS: tuple[Dimension, ...] = (
    "model",
    "project",
    "client",
    "key",
    "reason",
    "actor_team",
    "actor_user",
    "actor_app",
)
SCOPE_ORDER = {"organization": 0, "project": 1, "client": 2, "key": 3}


class Figures(BaseModel):
    requests: int = Field(description="admitted requests")
    denied: int = Field(description="refused requests (they cost nothing)")
    input_tokens: int = Field(description="input, cached and cache-write tokens of admitted requests")
    output_tokens: int
    cost_nanos: int
    cost: str = Field(description="currency units, exact decimal string")


class Totals(Figures):
    avg_latency_ms: int | None = Field(description="mean latency of admitted requests (null: none measured)")


class Point(Figures):
    start: datetime = Field(description="start of the UTC hour or day")


class Series(BaseModel):
    object: Literal["series"] = "series"
    window: str
    bucket: Bucket
    since: datetime
    until: datetime
    points: list[Point]


class Row(Figures):
    id: str = Field(description="model, project id, client id, key id or refusal reason")
    name: str | None = Field(default=None, description="project or client name")
    slug: str | None = Field(default=None, description="project slug")
    client_type: str | None = None
    client_id: str | None = Field(default=None, description="a key's client")
    client_name: str | None = None
    project: str | None = Field(default=None, description="a key's project slug")


class Summary(BaseModel):
    object: Literal["activity_summary"] = "activity_summary"
    window: str
    since: datetime
    until: datetime
    totals: Totals
    by_model: list[Row]
    by_project: list[Row]
    by_client: list[Row] = Field(description="clients and sub-accounts")
    by_key: list[Row]
    blocked_by_reason: list[Row] = Field(description="refused requests per reason, most first")
    by_actor_team: list[Row] = Field(description="signed actor attribution: per team (attributed requests only)")
    by_actor_user: list[Row] = Field(description="per user")
    by_actor_app: list[Row] = Field(description="per app")


class Request(BaseModel):
    request_id: str
    started_at: datetime
    organization_id: str | None
    project: str | None
    client_id: str | None
    client_name: str | None
    key_id: str | None
    provider: str | None
    model: str | None
    stream: bool
    status: int
    decision: str
    deny_reason: str | None
    input_tokens: int
    output_tokens: int
    cost_nanos: int
    cost: str
    latency_ms: int | None
    ttft_ms: int | None
    actor: dict[str, str] | None = Field(description="the verified actor (user, team, app, env), if signed")


class OrganizationBalance(BaseModel):
    object: Literal["organization_balance"] = "organization_balance"
    organization_id: str
    organization: str
    currency: str
    period: str = Field(description="calendar month of spend caps, in the spend time zone")
    spend_this_period: Money
    limits: list[LimitState] = Field(description="every quota in the organization, organization scope first")
    credits: list[CreditBalance]


class KeyActivity(Key):
    client_name: str | None
    project: str | None = Field(description="project slug")
    requests_this_period: int
    spend_this_period: Money


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "cost": amount(row["cost_nanos"])}


def _window(window: str, bucket: Bucket | None = None) -> tuple[datetime, datetime]:
    until = datetime.now(UTC)
    since = window_start(window, until)
    if bucket == "hour" and until - since > MAX_HOURLY:
        problem = Problem(path="query.bucket", message="hourly points cover at most 31 days; use bucket=day")
        raise ApiError(422, "validation_failed", "The request is invalid.", details=[problem])
    return since, until


def _request_cursor(cursor: str | None) -> RequestCursor | None:
    text = decode(cursor, str)
    if text is None:
        return None
    when, _, request_id = text.partition("|")
    try:
        started = datetime.fromisoformat(when)
    except ValueError:
        started = None
    # Only a cursor this API wrote is valid: a time with its zone (the column holds UTC) and a request id.
    if started is None or started.tzinfo is None or not request_id:
        problem = Problem(path="query.cursor", message="invalid cursor")
        raise ApiError(422, "validation_failed", "The request is invalid.", details=[problem])
    return started, request_id


# Builds the caller's scope inside the read session (an organization filter is looked up there).
Resolve = Callable[[Any], ActivityScope]


def _admin(
    admin: Admin, organization: str | None, project_id: str | None, client_id: str | None, key_id: str | None
) -> Resolve:
    def resolve(session: Any) -> ActivityScope:
        org_id = admin.organization_id
        if organization is not None:
            org_id = find_org(session, organization, admin.organization_id).id
        require_visible(session, org_id, project_id=project_id, client_id=client_id, key_id=key_id)
        return ActivityScope(org_id, project_id, client_id, key_id)

    return resolve


def _own(identity: Gateway) -> Resolve:
    return lambda _session: ActivityScope(org_id=identity.org.id, key_id=identity.key.key_id)


async def _summary(ctx: Context, resolve: Resolve, window: str, top: int) -> Summary:
    since, until = _window(window)

    def run(session: Any) -> tuple[dict[str, Any], dict[Dimension, list[dict[str, Any]]]]:
        scope = resolve(session)
        rows = {dim: repo.breakdown(session, scope, since, until, dim, top) for dim in BREAKDOWNS}
        return repo.totals(session, scope, since, until), rows

    totals, rows = await ctx.read(run)

    def out(dim: Dimension) -> list[Row]:
        return [Row(**_figures(r)) for r in rows[dim]]

    return Summary(
        window=window,
        since=since,
        until=until,
        totals=Totals(**_figures(totals)),
        by_model=out("model"),
        by_project=out("project"),
        by_client=out("client"),
        by_key=out("key"),
        blocked_by_reason=out("reason"),
        by_actor_team=out("actor_team"),
        by_actor_user=out("actor_user"),
        by_actor_app=out("actor_app"),
    )


async def _series(ctx: Context, resolve: Resolve, window: str, bucket: Bucket) -> Series:
    since, until = _window(window, bucket)
    points = await ctx.read(lambda s: repo.series(s, resolve(s), since, until, bucket))
    return Series(window=window, bucket=bucket, since=since, until=until, points=[Point(**_figures(p)) for p in points])


async def _requests(
    ctx: Context, resolve: Resolve, limit: int, cursor: str | None, decision: Decision | None
) -> Page[Request]:
    before = _request_cursor(cursor)
    rows, last = await ctx.read(
        lambda s: repo.recent_requests(s, resolve(s), limit=limit, before=before, decision=decision)
    )
    next_cursor = encode(f"{last[0].isoformat()}|{last[1]}") if last is not None else None
    return Page(data=[Request(**_figures(r)) for r in rows], next_cursor=next_cursor)


@router.get("/admin/activity/summary", response_model=Summary)
async def admin_summary(
    ctx: Ctx,
    admin: Admin,
    window: Window = "24h",
    top: Top = 10,
    organization: Organization = None,
    project_id: Filter = None,
    client_id: Filter = None,
    key_id: Filter = None,
) -> Summary:
    """The window's totals (admitted, refused, tokens, cost, mean latency) and its largest models, projects,
    clients and keys by spend, and refusals by reason."""
    return await _summary(ctx, _admin(admin, organization, project_id, client_id, key_id), window, top)


@router.get("/admin/activity/series", response_model=Series)
async def admin_series(
    ctx: Ctx,
    admin: Admin,
    window: Window = "24h",
    bucket: Bucket = "hour",
    organization: Organization = None,
    project_id: Filter = None,
    client_id: Filter = None,
    key_id: Filter = None,
) -> Series:
    """Requests, refusals, tokens and cost per UTC hour (windows up to 31 days) or day, empty buckets included."""
    return await _series(ctx, _admin(admin, organization, project_id, client_id, key_id), window, bucket)


@router.get("/admin/activity/requests", response_model=Page[Request])
async def admin_requests(
    ctx: Ctx,
    admin: Admin,
    limit: Limit = 50,
    cursor: Cursor = None,
    decision: Decision | None = None,
    organization: Organization = None,
    project_id: Filter = None,
    client_id: Filter = None,
    key_id: Filter = None,
) -> Page[Request]:
    """The latest requests, admitted and refused, newest first; `next_cursor` pages to older ones."""
    return await _requests(ctx, _admin(admin, organization, project_id, client_id, key_id), limit, cursor, decision)


@router.get("/admin/activity/balance", response_model=OrganizationBalance)
async def admin_balance(ctx: Ctx, admin: Admin, organization: Organization = None) -> OrganizationBalance:
    """The organization's counterpart of `/api/balance`: every quota in it with its live counters (this
    month's spend against each cap), its credits, and its metered spend this month."""
    given = organization_for(admin, organization)
    org = await ctx.read(lambda s: find_org(s, given, admin.organization_id))
    snapshot = ctx.snapshot
    now = time.time()
    month = ctx.month(now)
    quotas = sorted(
        (q for qs in snapshot.quotas.values() for q in qs if q.org_id == org.id and has_limits(q)),
        key=lambda q: (SCOPE_ORDER.get(q.scope_type, 9), q.scope_id, q.id),
    )
    try:
        states = (
            await ctx.runtime.counters.state(org.id, tuple(limit_check(q) for q in quotas), now, month)
            if quotas
            else []
        )
    except BackendUnavailable as exc:
        raise ApiError(503, "limits_unavailable", "Limits cannot be read right now; try again shortly.") from exc
    live = {credit_id(q): s.credit_balance_nanos for q, s in zip(quotas, states, strict=True) if q.prepaid}
    month_start = datetime.strptime(month, "%Y-%m").replace(tzinfo=ctx.zone)
    spent = await ctx.read(
        lambda s: repo.totals(s, ActivityScope(org.id), month_start, datetime.now(UTC))["cost_nanos"]
    )
    return OrganizationBalance(
        organization_id=org.id,
        organization=org.slug,
        currency=currency_of(snapshot, tuple(quotas)),
        period=month,
        spend_this_period=Money(nanos=spent, amount=amount(spent)),
        limits=[limit_view(snapshot, q, s) for q, s in zip(quotas, states, strict=True)],
        credits=await _credits(ctx, org.id, month, live),
    )


async def _credits(ctx: Context, org_id: str, month: str, live: dict[str, int | None]) -> list[CreditBalance]:
    """Live balances where a prepaid quota spends the credits, else credits minus metered spend since the
    first credit, from the ledger (as `/api/balance` does for one key)."""
    loaded = await ctx.read(repo.credit_scopes, org_id)
    if not loaded:
        return []
    durable = await asyncio.to_thread(
        StoreBaseline(ctx.db, ctx.settings.spend_timezone).read, org_id, [], list(loaded), month
    )
    out = []
    for cid, total in loaded.items():
        scope_type, _, scope_id = cid.partition(":")
        counter = live.get(cid)
        nanos = counter if counter is not None else int(durable.credit_nanos.get(cid, 0))
        out.append(
            CreditBalance(
                scope_type=scope_type,
                scope_id=scope_id,
                loaded=Money(nanos=total, amount=amount(total)),
                balance=Money(nanos=nanos, amount=amount(nanos)),
                live=counter is not None,
            )
        )
    return out


@router.get("/admin/activity/keys", response_model=Page[KeyActivity])
async def admin_keys(
    ctx: Ctx, admin: Admin, organization: Organization = None, limit: Limit = 100, cursor: Cursor = None
) -> Page[KeyActivity]:
    """Gateway keys (never secrets) with their client and project, when each was last used (from the usage
    events), and its admitted requests and spend this month."""
    month_start = datetime.strptime(ctx.month(time.time()), "%Y-%m").replace(tzinfo=ctx.zone)
    rows, last = await ctx.read(
        lambda s: repo.keys_page(
            s,
            admin.organization_id,
            organization=organization,
            since=month_start,
            after=decode(cursor, str),
            limit=limit,
        )
    )
    data = [
        KeyActivity(
            **{k: v for k, v in r.items() if k not in ("requests", "cost_nanos")},
            requests_this_period=r["requests"],
            spend_this_period=Money(nanos=r["cost_nanos"], amount=amount(r["cost_nanos"])),
        )
        for r in rows
    ]
    return Page(data=data, next_cursor=encode(last))


@router.get("/api/activity/summary", response_model=Summary)
async def own_summary(ctx: Ctx, identity: Gateway, window: Window = "24h", top: Top = 10) -> Summary:
    """The calling key's totals, models and refusals by reason over the window."""
    return await _summary(ctx, _own(identity), window, top)


@router.get("/api/activity/series", response_model=Series)
async def own_series(ctx: Ctx, identity: Gateway, window: Window = "24h", bucket: Bucket = "hour") -> Series:
    """The calling key's requests, refusals, tokens and cost per UTC hour or day."""
    return await _series(ctx, _own(identity), window, bucket)


@router.get("/api/activity/requests", response_model=Page[Request])
async def own_requests(
    ctx: Ctx, identity: Gateway, limit: Limit = 50, cursor: Cursor = None, decision: Decision | None = None
) -> Page[Request]:
    """The calling key's latest requests, newest first."""
    return await _requests(ctx, _own(identity), limit, cursor, decision)
