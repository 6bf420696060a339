"""Admin API tokens: ``<token_id>.<secret>``, 256-bit secrets stored only as hashes, global or per organization.

The hash is computed over ``admin:<token_id>`` (a gateway key id cannot contain a colon), so an admin
token never verifies as a gateway key and a gateway key never verifies as an admin token, whatever
their ids.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from quotagate.errors import NotFoundError
from quotagate.identity.credentials import Credential, SecretHasher, new_secret, parse_credential
from quotagate.store.audit import record_admin_action
from quotagate.store.database import Database
from quotagate.store.reports import resolve_org
from quotagate.store.tables import AdminToken, Organization

TOKEN_PREFIX = "qga-"
# last_used_at is a convenience, not an audit trail: refresh it at most this often per token.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class AdminPrincipal:
    """Who is calling the admin API. ``organization_id`` None: a global admin."""

    token_id: str
    name: str
    organization_id: str | None

    @property
    def actor(self) -> str:
        return f"admin-token:{self.token_id}"


@dataclass(frozen=True)
class AdminTokenInfo:
    token_id: str
    name: str
    organization_id: str | None
    organization_slug: str | None
    status: str
    created_at: datetime
    last_used_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "token_id": self.token_id,
            "name": self.name,
            "organization_id": self.organization_id,
            "organization": self.organization_slug,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


def _digest(hasher: SecretHasher, token_id: str, secret: str) -> str:
    return hasher.hash(f"admin:{token_id}", secret)


def issue_admin_token(
    session: Session,
    hasher: SecretHasher,
    *,
    organization: str | None,
    name: str | None,
    actor: str,
    now: datetime | None = None,
) -> tuple[AdminTokenInfo, Credential]:
    """A new token (global when `organization` is None); the credential is returned once and never stored."""
    now = now or datetime.now(UTC)
    org_id = None
    slug = None
    if organization is not None:
        org_id = resolve_org(session, organization)
        if org_id is None:
            raise NotFoundError(f"no organization {organization!r}")
        slug = session.get_one(Organization, org_id).slug
    token_id = TOKEN_PREFIX + secrets.token_hex(8)
    secret = new_secret()
    label = name or (f"{slug} admin" if slug else "global admin")
    session.add(
        AdminToken(
            token_id=token_id,
            name=label,
            organization_id=org_id,
            secret_hash=_digest(hasher, token_id, secret),
            status="active",
            created_at=now,
        )
    )
    record_admin_action(
        session,
        actor=actor,
        action="admin_token.issue",
        target_type="admin_token",
        target_id=token_id,
        organization_id=org_id,
        after={"name": label, "scope": slug or "global"},
        at=now,
    )
    info = AdminTokenInfo(token_id, label, org_id, slug, "active", now, None)
    return info, Credential(token_id, secret)


def list_admin_tokens(session: Session) -> list[AdminTokenInfo]:
    rows = session.execute(
        select(AdminToken, Organization.slug)
        .outerjoin(Organization, Organization.id == AdminToken.organization_id)
        .order_by(AdminToken.created_at, AdminToken.token_id)
    )
    return [
        AdminTokenInfo(t.token_id, t.name, t.organization_id, slug, t.status, t.created_at, t.last_used_at)
        for t, slug in rows
    ]


def revoke_admin_token(session: Session, token_id: str, *, actor: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    token = session.get(AdminToken, token_id)
    if token is None:
        raise NotFoundError(f"no admin token {token_id!r}")
    if token.status != "revoked":
        record_admin_action(
            session,
            actor=actor,
            action="admin_token.revoke",
            target_type="admin_token",
            target_id=token_id,
            organization_id=token.organization_id,
            before={"status": token.status},
            after={"status": "revoked"},
            at=now,
        )
        token.status = "revoked"
    return token.status


def verify_admin_token(db: Database, hasher: SecretHasher, raw: str, now: datetime) -> AdminPrincipal | None:
    """The principal of a presented token, or None (malformed, unknown, wrong secret, revoked: all alike)."""
    credential = parse_credential(raw)
    if credential is None:
        return None
    with db.read() as session:
        token = session.get(AdminToken, credential.key_id)
    stored = token.secret_hash if token is not None else None
    # Same hashing work whether or not the token exists, then a constant-time comparison.
    if not hasher.matches(f"admin:{credential.key_id}", credential.secret, stored):
        return None
    assert token is not None
    if token.status != "active":
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        with db.transaction() as session:
            session.execute(update(AdminToken).where(AdminToken.token_id == token.token_id).values(last_used_at=now))
    return AdminPrincipal(token.token_id, token.name, token.organization_id)
