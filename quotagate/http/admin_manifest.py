"""Manifest plan and apply over HTTP: the same validation (every error with its path, 422), the same
idempotent transaction as ``quotagate manifest plan|apply``. Global admins only: a manifest spans
organizations and disables what it no longer lists."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from quotagate.http.auth import Admin, require_global
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError
from quotagate.http.routing import JsonBodyRoute
from quotagate.manifest.desired import DesiredState, desired_state
from quotagate.manifest.load import MAX_MANIFEST_BYTES, ManifestError, Problem, load_text
from quotagate.store.manifest_apply import Plan, apply_plan, plan_manifest

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin/manifest", tags=["manifest"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]
SOURCE = "<request body>"

_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The manifest as YAML or JSON text (docs/manifest.md).",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


class Change(BaseModel):
    action: str
    kind: str
    id: str
    note: str | None
    fields: dict[str, list[Any]]


class PlanOut(BaseModel):
    changes: list[Change]
    summary: str
    applied: bool


async def _desired(request: Request) -> DesiredState:
    raw = await request.body()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ApiError(413, "request_too_large", f"The manifest is larger than {MAX_MANIFEST_BYTES} bytes.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(SOURCE, [Problem("", f"not UTF-8 text (byte {exc.start})")]) from exc
    return desired_state(load_text(text, SOURCE))


def _out(plan: Plan, applied: bool) -> PlanOut:
    return PlanOut(**plan.to_json(), applied=applied and not plan.empty)


@router.post("/plan", response_model=PlanOut, openapi_extra=_BODY)
async def plan(request: Request, ctx: Ctx, admin: Admin) -> PlanOut:
    """What apply would create, change and disable; changes nothing."""
    require_global(admin)
    desired = await _desired(request)
    return _out(await ctx.read(plan_manifest, desired), applied=False)


@router.post("/apply", response_model=PlanOut, openapi_extra=_BODY)
async def apply(request: Request, ctx: Ctx, admin: Admin) -> PlanOut:
    """Apply in one transaction; applying the same manifest again changes nothing."""
    require_global(admin)
    desired = await _desired(request)

    def work(session: Any) -> Plan:
        planned = plan_manifest(session, desired)
        apply_plan(session, desired, planned, actor=f"{admin.actor} manifest")
        return planned

    return _out(await ctx.write(work), applied=True)
