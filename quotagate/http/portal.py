"""Endpoints a gateway key calls about itself (seed 000): ``/api/balance`` and ``/v1/models``."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from quotagate.errors import BackendUnavailable
from quotagate.http.auth import Gateway
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError
from quotagate.http.models import PathRef
from quotagate.http.money import amount
from quotagate.http.routing import JsonBodyRoute
from quotagate.identity.authenticate import Identity
from quotagate.limits.model import CounterState, LimitCheck
from quotagate.policy import counter_id, credit_id, model_allowed, quotas_for
from quotagate.snapshot import QuotaView, Snapshot
from quotagate.store.baseline import StoreBaseline
from quotagate.store.catalog_repo import rate_card_created
from quotagate.store.credits_repo import loaded_credits
from quotagate.store.reports import ReportQuery, usage_report

router = APIRouter(route_class=JsonBodyRoute, tags=["portal"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]


class Money(BaseModel):
    nanos: int
    amount: str = Field(description="currency units, exact decimal string")


def money(nanos: int | None) -> Money | None:
    return None if nanos is None else Money(nanos=nanos, amount=amount(nanos))


class Limit(BaseModel):
    scope_type: str
    scope_id: str
    scope_name: str
    enforcement_mode: str
    models: list[str] | None = Field(description="the limit applies only to these models (null: all)")
    rpm_limit: int | None
    rpm_remaining: int | None
    tpm_limit: int | None
    tpm_remaining: int | None
    spend_limit: Money | None
    spent_this_period: Money | None
    spend_remaining: Money | None
    prepaid: bool
    credit_balance: Money | None


class CreditBalance(BaseModel):
    scope_type: str
    scope_id: str
    loaded: Money
    balance: Money
    live: bool = Field(description="true: the live counter a prepaid quota spends from; false: read from the ledger")


class Balance(BaseModel):
    object: Literal["balance"] = "balance"
    key_id: str
    organization: str
    project: str
    client: str
    client_type: str
    currency: str
    period: str = Field(description="calendar month of spend caps, in the spend time zone")
    balance: Money | None = Field(
        description="what this key can still spend: the least of its enforced caps' headroom and prepaid balances "
        "(null: no spend limit)"
    )
    spend_this_period: Money = Field(description="this key's metered spend this month (the ledger's figures)")
    limits: list[Limit]
    credits: list[CreditBalance]


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def limit_check(q: QuotaView) -> LimitCheck:
    return LimitCheck(
        counter_id=counter_id(q),
        enforce=q.enforce,
        rpm_limit=q.rpm_limit,
        tpm_limit=q.tpm_limit,
        spend_limit_nanos=q.monthly_spend_nanos,
        prepaid=q.prepaid,
        credit_id=credit_id(q) if q.prepaid else None,
    )


def _scope_name(snapshot: Snapshot, scope_type: str, scope_id: str) -> str:
    if scope_type == "organization" and scope_id in snapshot.orgs:
        return snapshot.orgs[scope_id].slug
    if scope_type == "project" and scope_id in snapshot.projects:
        return snapshot.projects[scope_id].slug
    if scope_type == "client" and scope_id in snapshot.clients:
        return snapshot.clients[scope_id].name
    return scope_id


def _remaining(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(limit - used, 0)


def limit_view(snapshot: Snapshot, q: QuotaView, s: CounterState) -> Limit:
    spend = q.monthly_spend_nanos
    return Limit(
        scope_type=q.scope_type,
        scope_id=q.scope_id,
        scope_name=_scope_name(snapshot, q.scope_type, q.scope_id),
        enforcement_mode="enforce" if q.enforce else "monitor",
        models=sorted(q.limited_models) if q.limited_models is not None else None,
        rpm_limit=q.rpm_limit,
        rpm_remaining=_remaining(q.rpm_limit, s.requests_this_minute),
        tpm_limit=q.tpm_limit,
        tpm_remaining=_remaining(q.tpm_limit, s.tokens_this_minute),
        spend_limit=money(spend),
        spent_this_period=money(s.spend_this_month_nanos if spend is not None else None),
        spend_remaining=money(_remaining(spend, s.spend_this_month_nanos)),
        prepaid=q.prepaid,
        credit_balance=money(s.credit_balance_nanos),
    )


def currency_of(snapshot: Snapshot, quotas: tuple[QuotaView, ...]) -> str:
    units = {q.unit for q in quotas if q.unit} or {p.unit for p in snapshot.prices.values()}
    return units.pop() if len(units) == 1 else "usd"


@router.get("/api/balance", response_model=Balance)
async def balance(ctx: Ctx, identity: Gateway) -> Balance:
    """The calling key's balance, spend this period, caps and remaining limits."""
    snapshot = ctx.snapshot
    now = time.time()
    month = ctx.month(now)
    org_id = identity.org.id
    quotas = tuple(q for q in quotas_for(snapshot, identity) if has_limits(q))
    checks = tuple(limit_check(q) for q in quotas)
    try:
        states = await ctx.runtime.counters.state(org_id, checks, now, month) if checks else []
    except BackendUnavailable as exc:
        raise ApiError(503, "limits_unavailable", "Limits cannot be read right now; try again shortly.") from exc
    limits = [limit_view(snapshot, q, s) for q, s in zip(quotas, states, strict=True)]
    live = {credit_id(q): s.credit_balance_nanos for q, s in zip(quotas, states, strict=True) if q.prepaid}
    credits = await _credits(ctx, identity, month, live)
    month_start = datetime.strptime(month, "%Y-%m").replace(tzinfo=ctx.zone)
    spent = await ctx.read(
        lambda s: usage_report(s, ReportQuery(since=month_start, key_id=identity.key.key_id)).totals["cost_nanos"]
    )
    headroom = [
        limit.spend_remaining.nanos
        for limit in limits
        if limit.spend_remaining is not None and limit.enforcement_mode == "enforce" and limit.models is None
    ]
    headroom += [c.balance.nanos for c in credits if c.live]
    return Balance(
        key_id=identity.key.key_id,
        organization=identity.org.slug,
        project=identity.project.slug,
        client=identity.client.name,
        client_type=identity.client.client_type,
        currency=currency_of(snapshot, quotas),
        period=month,
        balance=money(min(headroom)) if headroom else None,
        spend_this_period=Money(nanos=spent, amount=amount(spent)),
        limits=limits,
        credits=credits,
    )


def has_limits(q: QuotaView) -> bool:
    return bool(q.rpm_limit or q.tpm_limit or q.monthly_spend_nanos is not None or q.prepaid)


async def _credits(ctx: Context, identity: Identity, month: str, live: dict[str, int | None]) -> list[CreditBalance]:
    """Credit balances of the caller's scopes that have credits: live from the counters where a prepaid quota
    spends them, else credits minus metered spend since the first credit, from the ledger."""
    org_id = identity.org.id
    ids = [
        f"organization:{org_id}",
        f"project:{identity.project.id}",
        f"client:{identity.client.id}",
        f"key:{identity.key.key_id}",
    ]
    loaded = await ctx.read(loaded_credits, org_id, ids)
    if not loaded:
        return []
    durable = await asyncio.to_thread(
        StoreBaseline(ctx.db, ctx.settings.spend_timezone).read, org_id, [], list(loaded), month
    )
    out = []
    for cid in ids:
        if cid not in loaded:
            continue
        scope_type, _, scope_id = cid.partition(":")
        counter = live.get(cid)
        nanos = counter if counter is not None else int(durable.credit_nanos.get(cid, 0))
        out.append(
            CreditBalance(
                scope_type=scope_type,
                scope_id=scope_id,
                loaded=Money(nanos=loaded[cid], amount=amount(loaded[cid])),
                balance=Money(nanos=nanos, amount=amount(nanos)),
                live=counter is not None,
            )
        )
    return out


@router.get("/v1/models", response_model=ModelList)
async def models(ctx: Ctx, identity: Gateway) -> ModelList:
    """OpenAI list format: the models this key may use (priced, routed, allowed), bare and provider-prefixed."""
    return ModelList(data=await _models(ctx, identity))


@router.get("/v1/models/{model:path}", response_model=Model)
async def model(ctx: Ctx, identity: Gateway, model: PathRef) -> Model:
    for item in await _models(ctx, identity):
        if item.id == model:
            return item
    raise ApiError(404, "model_not_found", f"The model '{model}' does not exist or is not available to this key.")


async def _models(ctx: Context, identity: Identity) -> list[Model]:
    snapshot = ctx.snapshot
    quotas = quotas_for(snapshot, identity)
    routed = {route.provider for route in snapshot.routes}
    created = await _created(ctx, snapshot)
    bare: dict[str, Model] = {}
    prefixed: list[Model] = []
    for (provider, name), _price in sorted(snapshot.prices.items()):
        if provider not in routed or not model_allowed(identity, quotas, name):
            continue
        bare.setdefault(name, Model(id=name, created=created, owned_by=provider.value))
        prefixed.append(Model(id=f"{provider.value}/{name}", created=created, owned_by=provider.value))
    return [*bare.values(), *prefixed]


async def _created(ctx: Context, snapshot: Snapshot) -> int:
    """When the active rate card was written (epoch seconds), cached per snapshot version."""
    version = snapshot.rate_card_version
    if version is None:
        return 0
    if version not in ctx.rate_card_times:
        when = await ctx.read(rate_card_created, version)
        ctx.rate_card_times[version] = int(when.timestamp()) if when else 0
    return ctx.rate_card_times[version]
