"""Sub-accounts (seed 004): one POST per end customer mints a key with its own spend cap, rate limits,
cost tag and usage report. Caps are enforced before dispatch by the gateway's reservation.

Money: ``spend_cap_cents`` is an integer number of cents of the rate card's currency; usage reports
``cost_cents`` as an exact decimal string (charges are exact to 10^-9 units, finer than a cent) beside
integer ``cost_nanos``; ``summary`` equals the sum of ``by_model`` and of ``by_day`` exactly.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from quotagate.http.auth import Admin, organization_for
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError, Problem
from quotagate.http.idempotency import IdempotencyKey, fingerprint, respond, run_idempotent
from quotagate.http.models import Identifier, Models, Name, Patch, PathRef, Ref, Strict, Tag
from quotagate.http.money import amount, cents
from quotagate.http.paging import Cursor, Limit, Page, decode, encode
from quotagate.http.routing import JsonBodyRoute
from quotagate.money import MAX_NANOS, NANOS_PER_CENT
from quotagate.store import sub_accounts_repo as repo
from quotagate.store.reports import MEASURES, Report

router = APIRouter(
    route_class=JsonBodyRoute, prefix="/v1/sub-accounts", tags=["sub-accounts"], responses=ERROR_RESPONSES
)
Ctx = Annotated[Context, Depends(context)]

Cents = Annotated[int, Field(ge=0, le=MAX_NANOS // NANOS_PER_CENT, description="cents of the rate card currency")]
Rpm = Annotated[int, Field(gt=0, le=10**9)]
Tpm = Annotated[int, Field(gt=0, le=10**12)]
_WINDOW = re.compile(r"^([1-9][0-9]{0,4})([hd])$")
MAX_WINDOW = timedelta(days=366)


class SubAccount(BaseModel):
    id: str
    object: Literal["sub_account"] = "sub_account"
    organization_id: str
    project_id: str
    name: str
    status: str = Field(description="active | suspended | revoked")
    default_tag: str | None
    key_id: str | None
    key_status: str | None
    spend_cap_cents: int | None = Field(description="monthly cap, whole cents (rounded down)")
    spend_cap_nanos: int | None = Field(description="monthly cap, exact")
    rate_limit_rpm: int | None
    tpm: int | None
    models: list[str] | None
    created_at: datetime
    updated_at: datetime


class SubAccountCreated(SubAccount):
    key: str | None = Field(description="the gateway key, shown only here; null on an idempotent replay")


class SubAccountCreate(Strict):
    name: Name
    spend_cap_cents: Cents
    rate_limit_rpm: Rpm | None = None
    default_tag: Tag | None = None
    models: Models | None = Field(default=None, description="allowed models (bare or provider/model)")
    tpm: Tpm | None = None
    project_id: Identifier | None = Field(
        default=None, description="default: the organization's `sub-accounts` project (created on first use)"
    )
    organization: Ref | None = Field(default=None, description="id or slug; required with a global admin token")


class SubAccountPatch(Patch):
    nullable = frozenset({"rate_limit_rpm", "tpm", "models", "default_tag"})
    name: Name | None = None
    spend_cap_cents: Cents | None = None
    rate_limit_rpm: Rpm | None = None
    tpm: Tpm | None = None
    models: Models | None = None
    default_tag: Tag | None = None
    status: Literal["active", "suspended"] | None = None


class UsageFigures(BaseModel):
    requests: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_nanos: int
    cost_cents: str = Field(description="exact decimal string")
    cost: str = Field(description="currency units, exact decimal string")


class ModelUsage(UsageFigures):
    model_id: str
    provider: str
    model: str


class DayUsage(UsageFigures):
    date: str


class SubAccountUsage(BaseModel):
    id: str
    window: str
    since: datetime
    until: datetime
    summary: UsageFigures
    by_model: list[ModelUsage]
    by_day: list[DayUsage]


def _out(row: dict[str, Any]) -> dict[str, Any]:
    nanos = row.pop("spend_cap_nanos")
    cap = None if nanos is None else nanos // NANOS_PER_CENT
    return {**row, "spend_cap_nanos": nanos, "spend_cap_cents": cap}


def _limits(body: SubAccountCreate) -> repo.Limits:
    return repo.Limits(body.spend_cap_cents * NANOS_PER_CENT, body.rate_limit_rpm, body.tpm, body.models)


@router.post("", response_model=SubAccountCreated, status_code=201)
async def create_sub_account(
    request: Request, ctx: Ctx, admin: Admin, body: SubAccountCreate, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Create a sub-account and its key (returned once). Every gateway process enforces it within a second;
    this process already does when the response arrives."""
    organization = organization_for(admin, body.organization)

    def work(session: Any) -> tuple[int, dict[str, Any]]:
        row, credential = repo.create_sub_account(
            session,
            ctx.hasher,
            organization=organization,
            project_id=body.project_id,
            name=body.name,
            default_tag=body.default_tag,
            limits=_limits(body),
            scope=admin.organization_id,
            actor=admin.actor,
        )
        return 201, SubAccountCreated(**_out(row), key=str(credential)).model_dump(mode="json")

    sha = fingerprint("POST", request.url.path, body)
    return respond(await run_idempotent(ctx, admin, idempotency_key, sha, work, secret_fields=("key",)))


@router.get("", response_model=Page[SubAccount])
async def list_sub_accounts(
    ctx: Ctx,
    admin: Admin,
    organization: Annotated[Ref | None, Query(description="organization id or slug")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[SubAccount]:
    items, last = await ctx.read(
        repo.list_sub_accounts, admin.organization_id, organization=organization, after=decode(cursor, str), limit=limit
    )
    return Page(data=[SubAccount(**_out(i)) for i in items], next_cursor=encode(last))


@router.get("/{sa_id}", response_model=SubAccount)
async def get_sub_account(ctx: Ctx, admin: Admin, sa_id: PathRef) -> SubAccount:
    return SubAccount(**_out(await ctx.read(repo.get_sub_account, sa_id, admin.organization_id)))


@router.patch("/{sa_id}", response_model=SubAccount)
async def update_sub_account(ctx: Ctx, admin: Admin, sa_id: PathRef, body: SubAccountPatch) -> SubAccount:
    """Change the cap, limits, models, tag, name or status (active | suspended). Effective before the response."""
    changes = body.model_dump(exclude_unset=True)
    if "spend_cap_cents" in changes:
        changes["spend_cap_nanos"] = changes.pop("spend_cap_cents") * NANOS_PER_CENT
    row = await ctx.write(repo.update_sub_account, sa_id, changes, admin.organization_id, actor=admin.actor)
    return SubAccount(**_out(row))


@router.delete("/{sa_id}", response_model=SubAccount)
async def delete_sub_account(ctx: Ctx, admin: Admin, sa_id: PathRef) -> SubAccount:
    """Revoke: its keys stop working at once; its usage and ledger history stay."""
    row = await ctx.write(repo.delete_sub_account, sa_id, admin.organization_id, actor=admin.actor)
    return SubAccount(**_out(row))


def window_start(window: str, now: datetime) -> datetime:
    match = _WINDOW.match(window)
    span = None
    if match:
        n = int(match.group(1))
        span = timedelta(days=n) if match.group(2) == "d" else timedelta(hours=n)
    if span is None or span > MAX_WINDOW:
        problem = Problem(path="query.window", message="use e.g. 24h or 30d (at most 366d)")
        raise ApiError(422, "validation_failed", "The request is invalid.", details=[problem])
    return now - span


def figures(row: dict[str, Any]) -> dict[str, Any]:
    nanos = int(row["cost_nanos"])
    return {**{m: int(row[m]) for m in MEASURES}, "cost_cents": cents(nanos), "cost": amount(nanos)}


def _summary(report: Report) -> UsageFigures:
    return UsageFigures(**figures(report.totals))


@router.get("/{sa_id}/usage", response_model=SubAccountUsage)
async def sub_account_usage(
    ctx: Ctx,
    admin: Admin,
    sa_id: PathRef,
    window: Annotated[str, Query(max_length=8, description="e.g. 24h, 7d, 30d (at most 366d)")] = "30d",
) -> SubAccountUsage:
    """Admitted requests of the window, in total, by model and by UTC day; the same integers as the ledger."""
    now = datetime.now(UTC)
    since = window_start(window, now)
    by_model, by_day = await ctx.read(repo.sub_account_usage, sa_id, admin.organization_id, since, now)
    return SubAccountUsage(
        id=sa_id,
        window=window,
        since=since,
        until=now,
        summary=_summary(by_model),
        by_model=[
            ModelUsage(model_id=f"{r['provider']}/{r['model']}", provider=r["provider"], model=r["model"], **figures(r))
            for r in by_model.rows
        ],
        by_day=[DayUsage(date=r["day"], **figures(r)) for r in by_day.rows],
    )
