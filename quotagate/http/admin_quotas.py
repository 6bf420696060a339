"""Quotas: the manifest's quota fields on an organization, project, client or key.

``monthly_spend_limit`` is a decimal string in currency units (exact; a JSON number is read from its
text). Quotas created here are API-managed; manifest quotas are read-only here (409).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, Field

from quotagate.http.auth import Admin, require_global
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES
from quotagate.http.models import Identifier, Models, Note, Patch, PathRef, Ref, Strict
from quotagate.http.paging import Cursor, Limit, Page, decode, encode
from quotagate.http.routing import JsonBodyRoute
from quotagate.http.visibility import require_scope_visible
from quotagate.manifest.schema import EnforcementMode, ScopeType
from quotagate.store import quotas_repo as repo
from quotagate.store.admin_tokens_repo import AdminPrincipal

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin", tags=["quotas"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]

Rpm = Annotated[int, Field(gt=0, le=10**9)]
Tpm = Annotated[int, Field(gt=0, le=10**12)]
SpendLimit = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=9, allow_inf_nan=False)]
Unit = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[a-z]+$")]


class Quota(BaseModel):
    quota_id: str
    organization_id: str
    scope_type: str
    scope_id: str
    rpm_limit: int | None
    tpm_limit: int | None
    monthly_spend_limit: str | None = Field(description="currency units, exact decimal string")
    monthly_spend_nanos: int | None
    monthly_spend_unit: str | None
    prepaid: bool
    enforcement_mode: str
    model_allowlist: list[str] | None = Field(description="restricts the scope to these models and limits only them")
    applies_to_models: list[str] | None = Field(
        default=None, description="the limits count only these models; other models are not restricted by it"
    )
    notes: str | None
    status: str
    managed_by: str
    created_at: datetime
    updated_at: datetime


class QuotaCreate(Strict):
    quota_id: Identifier | None = Field(default=None, description="stable name within the organization")
    scope_type: ScopeType
    scope_id: Ref = Field(description="organization id or slug, project id, client (sub-account) id or key id")
    rpm_limit: Rpm | None = None
    tpm_limit: Tpm | None = None
    monthly_spend_limit: SpendLimit | None = None
    monthly_spend_unit: Unit | None = None
    prepaid: bool = False
    enforcement_mode: EnforcementMode = EnforcementMode.ENFORCE
    model_allowlist: Models | None = None
    applies_to_models: Models | None = None
    notes: Note | None = None


class QuotaPatch(Patch):
    nullable = frozenset(
        {
            "rpm_limit",
            "tpm_limit",
            "monthly_spend_limit",
            "monthly_spend_unit",
            "model_allowlist",
            "applies_to_models",
            "notes",
        }
    )
    rpm_limit: Rpm | None = None
    tpm_limit: Tpm | None = None
    monthly_spend_limit: SpendLimit | None = None
    monthly_spend_unit: Unit | None = None
    prepaid: bool | None = None
    enforcement_mode: EnforcementMode | None = None
    model_allowlist: Models | None = None
    applies_to_models: Models | None = None
    notes: Note | None = None
    status: Annotated[str, Field(pattern="^(active|disabled)$")] | None = None


async def _editable(ctx: Context, admin: AdminPrincipal, quota_id: str) -> None:
    quota = await ctx.read(repo.get_quota, quota_id, admin.organization_id)
    if quota.scope_type == ScopeType.ORGANIZATION.value:
        require_global(admin, "A quota on an organization")


def _values(body: BaseModel) -> dict[str, Any]:
    # Decimals stay Decimals (model_dump in python mode); enums become their values.
    values = body.model_dump(exclude_unset=True)
    return {k: v.value if isinstance(v, EnforcementMode | ScopeType) else v for k, v in values.items()}


@router.get("/quotas", response_model=Page[Quota])
async def list_quotas(
    ctx: Ctx,
    admin: Admin,
    organization: Annotated[Ref | None, Query(description="organization id or slug")] = None,
    scope_type: ScopeType | None = None,
    scope_id: Annotated[Ref | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[Quota]:
    kind = scope_type.value if scope_type else None

    def run(session: Any) -> tuple[list[dict[str, Any]], str | None]:
        if scope_id is not None:
            require_scope_visible(session, admin.organization_id, kind, scope_id)
        return repo.list_quotas(
            session,
            admin.organization_id,
            organization=organization,
            scope_type=kind,
            scope_id=scope_id,
            after=decode(cursor, str),
            limit=limit,
        )

    items, last = await ctx.read(run)
    return Page(data=[Quota(**i) for i in items], next_cursor=encode(last))


@router.post("/quotas", response_model=Quota, status_code=status.HTTP_201_CREATED)
async def create_quota(ctx: Ctx, admin: Admin, body: QuotaCreate) -> Quota:
    """Quotas on an organization itself need a global admin token."""
    if body.scope_type is ScopeType.ORGANIZATION:
        require_global(admin, "A quota on an organization")
    return Quota(**await ctx.write(repo.create_quota, _values(body), admin.organization_id, actor=admin.actor))


@router.get("/quotas/{quota_id}", response_model=Quota)
async def get_quota(ctx: Ctx, admin: Admin, quota_id: PathRef) -> Quota:
    row = await ctx.read(repo.get_quota, quota_id, admin.organization_id)
    return Quota(**repo.quota_json(row))


@router.patch("/quotas/{quota_id}", response_model=Quota)
async def update_quota(ctx: Ctx, admin: Admin, quota_id: PathRef, body: QuotaPatch) -> Quota:
    await _editable(ctx, admin, quota_id)
    return Quota(
        **await ctx.write(repo.update_quota, quota_id, _values(body), admin.organization_id, actor=admin.actor)
    )


@router.delete("/quotas/{quota_id}", response_model=Quota)
async def disable_quota(ctx: Ctx, admin: Admin, quota_id: PathRef) -> Quota:
    """Disables the quota (it stops applying); nothing is deleted."""
    await _editable(ctx, admin, quota_id)
    row = await ctx.write(repo.update_quota, quota_id, {"status": "disabled"}, admin.organization_id, actor=admin.actor)
    return Quota(**row)
