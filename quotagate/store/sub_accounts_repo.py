"""Sub-accounts: one end customer each, as a client of type ``sub_account`` with one gateway key and one
client-scoped quota (monthly spend cap, RPM, TPM, model allowlist), all ``managed_by="api"``.

A sub-account lives in the project it is created in, or in its organization's ``sub-accounts`` project
(created on first use). Its id ``sa-<hex>`` is its client id; its key id is ``sak-<same hex>``; its quota
id is ``<org>:sub-account:<id>``. Deleting revokes its keys and disables it; its usage stays.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quotagate.errors import ConflictError, NotFoundError
from quotagate.identity.credentials import Credential, SecretHasher
from quotagate.store import keys_repo
from quotagate.store.audit import record_admin_action
from quotagate.store.config_state import bump_config_version, get_config_state
from quotagate.store.paging_repo import keyset_page
from quotagate.store.quotas_repo import check_models
from quotagate.store.reports import Report, ReportQuery, usage_report
from quotagate.store.tables import Client, GatewayKey, Project, Quota, RateCardEntry
from quotagate.store.tenancy_repo import PROJECT, find_org, get_row

ID_PREFIX = "sa-"
DEFAULT_PROJECT_SLUG = "sub-accounts"
# API status <- client status
_STATUS = {"active": "active", "suspended": "suspended", "disabled": "revoked"}


@dataclass(frozen=True)
class Limits:
    spend_cap_nanos: int
    rate_limit_rpm: int | None = None
    tpm: int | None = None
    models: list[str] | None = None


def key_id_of(sa_id: str) -> str:
    return "sak-" + sa_id.removeprefix(ID_PREFIX)


def quota_id_of(org_id: str, sa_id: str) -> str:
    return f"{org_id}:sub-account:{sa_id}"


def sub_account_json(client: Client, key: GatewayKey | None, quota: Quota | None) -> dict[str, Any]:
    return {
        "id": client.id,
        "organization_id": client.organization_id,
        "project_id": client.project_id,
        "name": client.name,
        "status": _STATUS.get(client.status, client.status),
        "default_tag": client.default_tag,
        "key_id": key.key_id if key else None,
        "key_status": key.status if key else None,
        "spend_cap_nanos": quota.monthly_spend_nanos if quota else None,
        "rate_limit_rpm": quota.rpm_limit if quota else None,
        "tpm": quota.tpm_limit if quota else None,
        "models": quota.model_allowlist if quota else None,
        "created_at": client.created_at,
        "updated_at": client.updated_at,
    }


def _client(session: Session, sa_id: str, scope: str | None) -> Client:
    client = session.get(Client, sa_id)
    if client is None or client.client_type != "sub_account" or (scope is not None and client.organization_id != scope):
        raise NotFoundError(f"no sub-account {sa_id!r}")
    return client


def _parts(session: Session, client: Client) -> tuple[GatewayKey | None, Quota | None]:
    key = session.get(GatewayKey, key_id_of(client.id))
    quota = session.get(Quota, quota_id_of(client.organization_id, client.id))
    return key, quota


def get_sub_account(session: Session, sa_id: str, scope: str | None) -> dict[str, Any]:
    client = _client(session, sa_id, scope)
    return sub_account_json(client, *_parts(session, client))


def list_sub_accounts(
    session: Session, scope: str | None, *, organization: str | None = None, after: str | None = None, limit: int = 100
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(Client).where(Client.client_type == "sub_account")
    if scope is not None:
        stmt = stmt.where(Client.organization_id == scope)
    if organization is not None:
        stmt = stmt.where(Client.organization_id == find_org(session, organization, scope).id)
    rows, last = keyset_page(session, stmt, Client.id, after, limit)
    return [sub_account_json(r, *_parts(session, r)) for r in rows], last


def _default_project(session: Session, org_id: str, now: datetime) -> Project:
    found = session.scalar(
        select(Project).where(Project.organization_id == org_id, Project.slug == DEFAULT_PROJECT_SLUG)
    )
    if found is not None:
        return found
    project_id = f"{org_id}.{DEFAULT_PROJECT_SLUG}"
    if len(project_id) > 128 or session.get(Project, project_id) is not None:
        project_id = "sub-accounts-" + hashlib.blake2b(org_id.encode(), digest_size=8).hexdigest()
    project = Project(
        id=project_id,
        organization_id=org_id,
        slug=DEFAULT_PROJECT_SLUG,
        name="Sub-accounts",
        status="active",
        settings={},
        managed_by="api",
        created_at=now,
        updated_at=now,
    )
    session.add(project)
    session.flush()
    return project


def _spend_unit(session: Session) -> str:
    """The currency of the active rate card when it has one; caps in cents are hundredths of it."""
    version = get_config_state(session).active_rate_card
    found = set(session.scalars(select(RateCardEntry.unit).where(RateCardEntry.version == version)))
    return found.pop() if len(found) == 1 else "usd"


def create_sub_account(
    session: Session,
    hasher: SecretHasher,
    *,
    organization: str,
    project_id: str | None,
    name: str,
    default_tag: str | None,
    limits: Limits,
    scope: str | None,
    actor: str,
) -> tuple[dict[str, Any], Credential]:
    """Client + key + quota in the caller's transaction; the credential is returned once."""
    now = datetime.now(UTC)
    org = find_org(session, organization, scope)
    if project_id is None:
        project = _default_project(session, org.id, now)
    else:
        project = get_row(session, PROJECT, project_id, org.id)
    if project.status != "active":
        raise ConflictError(f"project {project.id!r} is {project.status}")
    models = None if limits.models is None else check_models(session, limits.models)
    sa_id = ID_PREFIX + secrets.token_hex(8)
    client = Client(
        id=sa_id,
        organization_id=org.id,
        project_id=project.id,
        name=name,
        client_type="sub_account",
        status="active",
        default_tag=default_tag,
        managed_by="api",
        created_at=now,
        updated_at=now,
    )
    quota = Quota(
        id=quota_id_of(org.id, sa_id),
        organization_id=org.id,
        scope_type="client",
        scope_id=sa_id,
        rpm_limit=limits.rate_limit_rpm,
        tpm_limit=limits.tpm,
        monthly_spend_nanos=limits.spend_cap_nanos,
        monthly_spend_unit=_spend_unit(session),
        prepaid=False,
        enforcement_mode="enforce",
        model_allowlist=models,
        notes=f"sub-account {name}",
        status="active",
        managed_by="api",
        created_at=now,
        updated_at=now,
    )
    session.add_all([client, quota])
    session.flush()
    key = GatewayKey(
        key_id=key_id_of(sa_id),
        organization_id=org.id,
        project_id=project.id,
        client_id=sa_id,
        status="active",
        managed_by="api",
        created_at=now,
        updated_at=now,
    )
    session.add(key)
    session.flush()
    credential = keys_repo.issue_key(session, hasher, key.key_id, actor=actor, now=now)
    out = sub_account_json(client, key, quota)
    record_admin_action(
        session,
        actor=actor,
        action="sub_account.create",
        target_type="sub_account",
        target_id=sa_id,
        organization_id=org.id,
        after=_audit(out),
        at=now,
    )
    bump_config_version(session, now)
    return out, credential


# API field -> (row, column) of a change
_CLIENT_FIELDS = {"name": "name", "default_tag": "default_tag", "status": "status"}
_QUOTA_FIELDS = {
    "spend_cap_nanos": "monthly_spend_nanos",
    "rate_limit_rpm": "rpm_limit",
    "tpm": "tpm_limit",
    "models": "model_allowlist",
}


def update_sub_account(
    session: Session, sa_id: str, changes: dict[str, Any], scope: str | None, *, actor: str
) -> dict[str, Any]:
    """Change name, tag, status (active | suspended) and limits; a revoked sub-account cannot change."""
    client = _client(session, sa_id, scope)
    key, quota = _parts(session, client)
    if client.status == "disabled":
        raise ConflictError(f"sub-account {sa_id!r} is revoked")
    if quota is None:
        raise ConflictError(f"sub-account {sa_id!r} has no quota row {quota_id_of(client.organization_id, sa_id)!r}")
    if changes.get("models") is not None:
        changes = {**changes, "models": check_models(session, changes["models"])}
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for target, fields in ((client, _CLIENT_FIELDS), (quota, _QUOTA_FIELDS)):
        for api_name, column in fields.items():
            if api_name in changes and getattr(target, column) != changes[api_name]:
                before[api_name], after[api_name] = getattr(target, column), changes[api_name]
                setattr(target, column, changes[api_name])
    if after:
        now = datetime.now(UTC)
        client.updated_at = quota.updated_at = now
        record_admin_action(
            session,
            actor=actor,
            action="sub_account.update",
            target_type="sub_account",
            target_id=sa_id,
            organization_id=client.organization_id,
            before=before,
            after=after,
            at=now,
        )
        bump_config_version(session, now)
    return sub_account_json(client, key, quota)


def delete_sub_account(session: Session, sa_id: str, scope: str | None, *, actor: str) -> dict[str, Any]:
    """Revoke every key of the sub-account and disable it; nothing is deleted. Repeating it changes nothing."""
    client = _client(session, sa_id, scope)
    if client.status != "disabled":
        now = datetime.now(UTC)
        for key in list(session.scalars(select(GatewayKey).where(GatewayKey.client_id == sa_id))):
            if key.status in {"active", "suspended"}:
                keys_repo.set_key_status(session, key.key_id, "revoke", actor=actor, now=now)
        before = client.status
        client.status = "disabled"
        client.updated_at = now
        _, quota = _parts(session, client)
        if quota is not None:
            quota.status = "disabled"
            quota.updated_at = now
        record_admin_action(
            session,
            actor=actor,
            action="sub_account.revoke",
            target_type="sub_account",
            target_id=sa_id,
            organization_id=client.organization_id,
            before={"status": before},
            after={"status": "revoked"},
            at=now,
        )
        bump_config_version(session, now)
    return sub_account_json(client, *_parts(session, client))


def sub_account_usage(
    session: Session, sa_id: str, scope: str | None, since: datetime, until: datetime | None = None
) -> tuple[Report, Report]:
    """(by provider and model, by UTC day) of the sub-account's admitted requests since `since`."""
    client = _client(session, sa_id, scope)

    def query(*group_by: str) -> ReportQuery:
        return ReportQuery(group_by, since, until, org_id=client.organization_id, client_id=client.id)

    return usage_report(session, query("provider", "model")), usage_report(session, query("day"))


def _audit(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
