"""Who the presented admin token is."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from quotagate.http.auth import Admin
from quotagate.http.errors import ERROR_RESPONSES
from quotagate.http.routing import JsonBodyRoute

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)


class Me(BaseModel):
    token_id: str
    name: str
    organization_id: str | None = Field(description="null: a global admin")


@router.get("/me", response_model=Me)
async def me(admin: Admin) -> Me:
    return Me(token_id=admin.token_id, name=admin.name, organization_id=admin.organization_id)
