"""Provider credentials: set or rotate per provider, encrypted at rest; every process uses the new key
within a second. The secret is never returned or logged (bodies are not logged, and validation errors
never echo input)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, SecretStr

from quotagate.apis import Provider
from quotagate.errors import ConfigError
from quotagate.http.auth import Admin, require_global
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError
from quotagate.http.models import Strict
from quotagate.http.routing import JsonBodyRoute
from quotagate.store.credentials_repo import set_provider_key

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin/upstreams", tags=["upstreams"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]


class CredentialSet(Strict):
    api_key: Annotated[SecretStr, Field(min_length=1, max_length=4096)]


class CredentialOut(BaseModel):
    provider: str
    source: str
    version: int = Field(description="increases with every rotation")


@router.put("/{provider}/credential", response_model=CredentialOut)
async def set_credential(ctx: Ctx, admin: Admin, provider: Provider, body: CredentialSet) -> CredentialOut:
    """Store or rotate the provider key (global admins only: one key serves every organization)."""
    require_global(admin)
    try:
        box = ctx.runtime.app.secret_box()
    except ConfigError as exc:  # a deployment setting is missing, not a bad request
        raise ApiError(503, "not_configured", str(exc)) from exc
    version = await ctx.write(set_provider_key, box, provider, body.api_key.get_secret_value(), actor=admin.actor)
    return CredentialOut(provider=provider.value, source="stored", version=version)
