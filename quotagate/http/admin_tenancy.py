"""Organizations, projects and clients: the manifest's objects and field names.

Objects created here are API-managed (a manifest apply leaves them alone); manifest-managed ones are
read-only here (409). DELETE disables: keys stop working, history stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel

from quotagate.http.auth import Admin, organization_for, require_global
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES
from quotagate.http.models import Identifier, Name, Patch, PathRef, Ref, Slug, Strict, Tag
from quotagate.http.paging import Cursor, Limit, Page, decode, encode
from quotagate.http.routing import JsonBodyRoute
from quotagate.http.visibility import require_visible
from quotagate.manifest.schema import Status
from quotagate.store import tenancy_repo as repo

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin", tags=["tenancy"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]


class Managed(BaseModel):
    managed_by: str
    created_at: datetime
    updated_at: datetime


class Organization(Managed):
    organization_id: str
    organization_slug: str
    organization_name: str
    environment_id: str | None
    status: str


class OrganizationCreate(Strict):
    organization_id: Identifier
    organization_slug: Slug
    organization_name: Name
    environment_id: Identifier | None = None
    status: Status = Status.ACTIVE


class OrganizationPatch(Patch):
    nullable = frozenset({"environment_id"})
    organization_name: Name | None = None
    environment_id: Identifier | None = None
    status: Status | None = None


class Project(Managed):
    project_id: str
    organization_id: str
    project_slug: str
    project_name: str
    status: str


class ProjectCreate(Strict):
    organization: Ref | None = None
    project_id: Identifier
    project_slug: Slug
    project_name: Name
    status: Status = Status.ACTIVE


class ProjectPatch(Patch):
    project_name: Name | None = None
    status: Status | None = None


class Client(Managed):
    client_id: str
    organization_id: str
    project_id: str
    client_name: str
    client_type: str
    default_tag: str | None
    status: str


class ClientCreate(Strict):
    project_id: Identifier
    client_id: Identifier
    client_name: Name
    # Sub-accounts are created through /v1/sub-accounts, which also gives them their key and cap.
    client_type: Literal["gateway_key", "service"] = "gateway_key"
    default_tag: Tag | None = None
    status: Status = Status.ACTIVE


class ClientPatch(Patch):
    nullable = frozenset({"default_tag"})
    client_name: Name | None = None
    default_tag: Tag | None = None
    status: Status | None = None


def _changes(patch: BaseModel) -> dict[str, Any]:
    return patch.model_dump(mode="json", exclude_unset=True)


# Organizations


@router.get("/organizations", response_model=Page[Organization])
async def list_organizations(ctx: Ctx, admin: Admin, limit: Limit = 100, cursor: Cursor = None) -> Page[Organization]:
    items, last = await ctx.read(
        repo.list_page, repo.ORGANIZATION, admin.organization_id, after=decode(cursor, str), limit=limit
    )
    return Page(data=[Organization(**i) for i in items], next_cursor=encode(last))


@router.post("/organizations", response_model=Organization, status_code=status.HTTP_201_CREATED)
async def create_organization(ctx: Ctx, admin: Admin, body: OrganizationCreate) -> Organization:
    """Global admins only."""
    require_global(admin)
    row = await ctx.write(repo.create, repo.ORGANIZATION, body.model_dump(mode="json"), None, actor=admin.actor)
    return Organization(**row)


@router.get("/organizations/{organization}", response_model=Organization)
async def get_organization(ctx: Ctx, admin: Admin, organization: PathRef) -> Organization:
    """By id or slug."""
    return Organization(**await ctx.read(repo.get, repo.ORGANIZATION, organization, admin.organization_id))


@router.patch("/organizations/{organization}", response_model=Organization)
async def update_organization(ctx: Ctx, admin: Admin, organization: PathRef, body: OrganizationPatch) -> Organization:
    """Global admins only."""
    require_global(admin)
    row = await ctx.write(
        repo.update, repo.ORGANIZATION, organization, _changes(body), admin.organization_id, actor=admin.actor
    )
    return Organization(**row)


@router.delete("/organizations/{organization}", response_model=Organization)
async def disable_organization(ctx: Ctx, admin: Admin, organization: PathRef) -> Organization:
    """Disables the organization: every key of it is refused. Nothing is deleted. Global admins only."""
    require_global(admin)
    row = await ctx.write(
        repo.update, repo.ORGANIZATION, organization, {"status": "disabled"}, admin.organization_id, actor=admin.actor
    )
    return Organization(**row)


# Projects


@router.get("/projects", response_model=Page[Project])
async def list_projects(
    ctx: Ctx,
    admin: Admin,
    organization: Annotated[Ref | None, Query(description="organization id or slug")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[Project]:
    items, last = await ctx.read(
        repo.list_page,
        repo.PROJECT,
        admin.organization_id,
        organization=organization,
        after=decode(cursor, str),
        limit=limit,
    )
    return Page(data=[Project(**i) for i in items], next_cursor=encode(last))


@router.post("/projects", response_model=Project, status_code=status.HTTP_201_CREATED)
async def create_project(ctx: Ctx, admin: Admin, body: ProjectCreate) -> Project:
    values = body.model_dump(mode="json", exclude={"organization"})
    values["organization_id"] = organization_for(admin, body.organization)
    return Project(**await ctx.write(repo.create, repo.PROJECT, values, admin.organization_id, actor=admin.actor))


@router.get("/projects/{project_id}", response_model=Project)
async def get_project(ctx: Ctx, admin: Admin, project_id: PathRef) -> Project:
    return Project(**await ctx.read(repo.get, repo.PROJECT, project_id, admin.organization_id))


@router.patch("/projects/{project_id}", response_model=Project)
async def update_project(ctx: Ctx, admin: Admin, project_id: PathRef, body: ProjectPatch) -> Project:
    row = await ctx.write(
        repo.update, repo.PROJECT, project_id, _changes(body), admin.organization_id, actor=admin.actor
    )
    return Project(**row)


@router.delete("/projects/{project_id}", response_model=Project)
async def disable_project(ctx: Ctx, admin: Admin, project_id: PathRef) -> Project:
    row = await ctx.write(
        repo.update, repo.PROJECT, project_id, {"status": "disabled"}, admin.organization_id, actor=admin.actor
    )
    return Project(**row)


# Clients


@router.get("/clients", response_model=Page[Client])
async def list_clients(
    ctx: Ctx,
    admin: Admin,
    organization: Annotated[Ref | None, Query(description="organization id or slug")] = None,
    project_id: Annotated[Ref | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[Client]:
    def run(session: Any) -> tuple[list[dict[str, Any]], str | None]:
        require_visible(session, admin.organization_id, project_id=project_id)
        return repo.list_page(
            session,
            repo.CLIENT,
            admin.organization_id,
            organization=organization,
            project_id=project_id,
            after=decode(cursor, str),
            limit=limit,
        )

    items, last = await ctx.read(run)
    return Page(data=[Client(**i) for i in items], next_cursor=encode(last))


@router.post("/clients", response_model=Client, status_code=status.HTTP_201_CREATED)
async def create_client(ctx: Ctx, admin: Admin, body: ClientCreate) -> Client:
    row = await ctx.write(
        repo.create, repo.CLIENT, body.model_dump(mode="json"), admin.organization_id, actor=admin.actor
    )
    return Client(**row)


@router.get("/clients/{client_id}", response_model=Client)
async def get_client(ctx: Ctx, admin: Admin, client_id: PathRef) -> Client:
    return Client(**await ctx.read(repo.get, repo.CLIENT, client_id, admin.organization_id))


@router.patch("/clients/{client_id}", response_model=Client)
async def update_client(ctx: Ctx, admin: Admin, client_id: PathRef, body: ClientPatch) -> Client:
    row = await ctx.write(repo.update, repo.CLIENT, client_id, _changes(body), admin.organization_id, actor=admin.actor)
    return Client(**row)


@router.delete("/clients/{client_id}", response_model=Client)
async def disable_client(ctx: Ctx, admin: Admin, client_id: PathRef) -> Client:
    row = await ctx.write(
        repo.update, repo.CLIENT, client_id, {"status": "disabled"}, admin.organization_id, actor=admin.actor
    )
    return Client(**row)
