"""Organizations, projects and clients through the admin API, with the manifest's field names.

Rows created here are ``managed_by="api"``: a manifest apply never disables them. Rows the manifest
owns are read-only here (409): the manifest is their source of truth and the next apply would undo
the change. Nothing is deleted; "delete" disables. ``scope`` is the caller's organization (None: global
admin); an object outside it does not exist for the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quotagate.errors import ConflictError, NotFoundError
from quotagate.store.audit import record_admin_action
from quotagate.store.config_state import bump_config_version
from quotagate.store.paging_repo import keyset_page
from quotagate.store.tables import Client, Organization, Project


@dataclass(frozen=True)
class Kind:
    name: str
    model: type[Any]
    fields: dict[str, str]  # API field -> column; the first is the primary key

    def to_json(self, row: Any) -> dict[str, Any]:
        out = {api: getattr(row, column) for api, column in self.fields.items()}
        out.update(managed_by=row.managed_by, created_at=row.created_at, updated_at=row.updated_at)
        return out

    def org_of(self, row: Any) -> str:
        return str(row.id if self.model is Organization else row.organization_id)


ORGANIZATION = Kind(
    "organization",
    Organization,
    {
        "organization_id": "id",
        "organization_slug": "slug",
        "organization_name": "name",
        "environment_id": "environment_id",
        "status": "status",
    },
)
PROJECT = Kind(
    "project",
    Project,
    {
        "project_id": "id",
        "organization_id": "organization_id",
        "project_slug": "slug",
        "project_name": "name",
        "status": "status",
    },
)
CLIENT = Kind(
    "client",
    Client,
    {
        "client_id": "id",
        "organization_id": "organization_id",
        "project_id": "project_id",
        "client_name": "name",
        "client_type": "client_type",
        "default_tag": "default_tag",
        "status": "status",
    },
)


def find_org(session: Session, org: str, scope: str | None) -> Organization:
    """An organization by id or slug, within the caller's scope."""
    row = session.scalar(select(Organization).where((Organization.id == org) | (Organization.slug == org)))
    if row is None or (scope is not None and row.id != scope):
        raise NotFoundError(f"no organization {org!r}")
    return row


def get_row(session: Session, kind: Kind, ident: str, scope: str | None) -> Any:
    row = session.get(kind.model, ident)
    if row is None or (scope is not None and kind.org_of(row) != scope):
        raise NotFoundError(f"no {kind.name} {ident!r}")
    return row


def get(session: Session, kind: Kind, ident: str, scope: str | None) -> dict[str, Any]:
    if kind is ORGANIZATION:
        return kind.to_json(find_org(session, ident, scope))
    return kind.to_json(get_row(session, kind, ident, scope))


def list_page(
    session: Session,
    kind: Kind,
    scope: str | None,
    *,
    organization: str | None = None,
    project_id: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], str | None]:
    model = kind.model
    stmt = select(model)
    org_column = model.id if model is Organization else model.organization_id
    if scope is not None:
        stmt = stmt.where(org_column == scope)
    if organization is not None:
        stmt = stmt.where(org_column == find_org(session, organization, scope).id)
    if project_id is not None and model is Client:
        stmt = stmt.where(Client.project_id == project_id)
    rows, last = keyset_page(session, stmt, model.id, after, limit)
    return [kind.to_json(row) for row in rows], last


def create(session: Session, kind: Kind, values: dict[str, Any], scope: str | None, *, actor: str) -> dict[str, Any]:
    """`values` uses the API field names; parents must exist within `scope`."""
    now = datetime.now(UTC)
    columns = {kind.fields[k]: v for k, v in values.items() if k in kind.fields}
    ident = columns["id"]
    if session.get(kind.model, ident) is not None:
        raise ConflictError(f"{kind.name} id {ident!r} is already in use")
    if kind is ORGANIZATION:
        if session.scalar(select(Organization.id).where(Organization.slug == columns["slug"])) is not None:
            raise ConflictError(f"organization slug {columns['slug']!r} is already in use")
    elif kind is PROJECT:
        org = find_org(session, columns["organization_id"], scope)
        columns["organization_id"] = org.id
        taken = select(Project.id).where(Project.organization_id == org.id, Project.slug == columns["slug"])
        if session.scalar(taken) is not None:
            raise ConflictError(f"project slug {columns['slug']!r} is already in use in {org.slug!r}")
    else:
        project = get_row(session, PROJECT, columns["project_id"], scope)
        columns["organization_id"] = project.organization_id
    row = kind.model(**columns, managed_by="api", created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    record_admin_action(
        session,
        actor=actor,
        action=f"{kind.name}.create",
        target_type=kind.name,
        target_id=ident,
        organization_id=kind.org_of(row),
        after=_plain(kind.to_json(row)),
        at=now,
    )
    bump_config_version(session, now)
    return kind.to_json(row)


def update(
    session: Session, kind: Kind, ident: str, changes: dict[str, Any], scope: str | None, *, actor: str
) -> dict[str, Any]:
    """Change API-managed fields (API names); unchanged values are not an event."""
    row = find_org(session, ident, scope) if kind is ORGANIZATION else get_row(session, kind, ident, scope)
    columns = {kind.fields[k]: v for k, v in changes.items() if k in kind.fields}
    diff = {c: (getattr(row, c), v) for c, v in columns.items() if getattr(row, c) != v}
    if not diff:
        return kind.to_json(row)
    if row.managed_by != "api":
        raise ConflictError(
            f"{kind.name} {row.id!r} is managed by the manifest; change the manifest and apply it instead"
        )
    now = datetime.now(UTC)
    for column, (_, after) in diff.items():
        setattr(row, column, after)
    row.updated_at = now
    record_admin_action(
        session,
        actor=actor,
        action=f"{kind.name}.update",
        target_type=kind.name,
        target_id=row.id,
        organization_id=kind.org_of(row),
        before={c: b for c, (b, _) in diff.items()},
        after={c: a for c, (_, a) in diff.items()},
        at=now,
    )
    bump_config_version(session, now)
    return kind.to_json(row)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
