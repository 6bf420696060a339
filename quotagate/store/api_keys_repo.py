"""Gateway keys through the admin API: create for a client, look up and list within the caller's scope.

The lifecycle (issue, rotate, suspend, resume, revoke) is :mod:`quotagate.store.keys_repo`, shared with
the CLI; listings never include secrets or their hashes.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quotagate.errors import ConflictError, NotFoundError
from quotagate.identity.credentials import Credential, SecretHasher
from quotagate.store import keys_repo
from quotagate.store.audit import record_admin_action
from quotagate.store.paging_repo import keyset_page
from quotagate.store.quotas_repo import check_models
from quotagate.store.tables import Client, GatewayKey
from quotagate.store.tenancy_repo import CLIENT, find_org, get_row


def key_json(k: GatewayKey) -> dict[str, Any]:
    return {
        "key_id": k.key_id,
        "organization_id": k.organization_id,
        "project_id": k.project_id,
        "client_id": k.client_id,
        "tier": k.tier,
        "status": k.status,
        "models": k.models,
        "issued": k.secret_hash is not None,
        "expires_at": k.expires_at,
        "issued_at": k.issued_at,
        "last_used_at": k.last_used_at,
        "previous_valid_until": k.previous_valid_until,
        "managed_by": k.managed_by,
        "created_at": k.created_at,
    }


def get_key(session: Session, key_id: str, scope: str | None) -> GatewayKey:
    key = session.get(GatewayKey, key_id)
    if key is None or (scope is not None and key.organization_id != scope):
        raise NotFoundError(f"no gateway key {key_id!r}")
    return key


def list_keys(
    session: Session,
    scope: str | None,
    *,
    organization: str | None = None,
    client_id: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(GatewayKey)
    if scope is not None:
        stmt = stmt.where(GatewayKey.organization_id == scope)
    if organization is not None:
        stmt = stmt.where(GatewayKey.organization_id == find_org(session, organization, scope).id)
    if client_id is not None:
        stmt = stmt.where(GatewayKey.client_id == client_id)
    if status is not None:
        stmt = stmt.where(GatewayKey.status == status)
    rows, last = keyset_page(session, stmt, GatewayKey.key_id, after, limit)
    return [key_json(r) for r in rows], last


def create_key(
    session: Session,
    hasher: SecretHasher,
    *,
    client_id: str,
    key_id: str | None,
    tier: str | None,
    models: list[str] | None,
    expires_at: datetime | None,
    scope: str | None,
    actor: str,
) -> tuple[dict[str, Any], Credential]:
    """A new API-managed key of `client_id`, issued at once; the credential is returned once."""
    now = datetime.now(UTC)
    client: Client = get_row(session, CLIENT, client_id, scope)
    if client.status == "disabled":
        raise ConflictError(f"client {client_id!r} is disabled")
    key_id = key_id or "key-" + secrets.token_hex(8)
    if session.get(GatewayKey, key_id) is not None:
        raise ConflictError(f"key id {key_id!r} is already in use")
    session.add(
        GatewayKey(
            key_id=key_id,
            organization_id=client.organization_id,
            project_id=client.project_id,
            client_id=client.id,
            tier=tier,
            status="active",
            models=None if models is None else check_models(session, models),
            managed_by="api",
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    record_admin_action(
        session,
        actor=actor,
        action="key.create",
        target_type="gateway_key",
        target_id=key_id,
        organization_id=client.organization_id,
        after={"client_id": client.id, "tier": tier, "models": models},
        at=now,
    )
    credential = keys_repo.issue_key(session, hasher, key_id, actor=actor, expires_at=expires_at, now=now)
    return key_json(get_key(session, key_id, scope)), credential
