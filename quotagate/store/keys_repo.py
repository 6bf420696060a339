"""Gateway-key lifecycle: issue, rotate with grace, suspend, resume, revoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from quotagate.errors import ConfigError, NotFoundError
from quotagate.identity.credentials import Credential, SecretHasher, new_secret
from quotagate.store.audit import record_admin_action
from quotagate.store.config_state import bump_config_version
from quotagate.store.tables import AdminAuditEvent, Client, GatewayKey, Organization, Project


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    organization: str
    project: str
    client: str
    status: str
    issued: bool
    expires_at: datetime | None
    issued_at: datetime | None
    last_used_at: datetime | None
    previous_valid_until: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "organization": self.organization,
            "project": self.project,
            "client": self.client,
            "status": self.status,
            "issued": self.issued,
            "expires_at": _iso(self.expires_at),
            "issued_at": _iso(self.issued_at),
            "last_used_at": _iso(self.last_used_at),
            "previous_valid_until": _iso(self.previous_valid_until),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _get(session: Session, key_id: str) -> GatewayKey:
    key = session.get(GatewayKey, key_id)
    if key is None:
        raise NotFoundError(f"no gateway key {key_id!r}")
    return key


def issue_key(
    session: Session,
    hasher: SecretHasher,
    key_id: str,
    *,
    actor: str,
    expires_at: datetime | None = None,
    replace: bool = False,
    now: datetime | None = None,
) -> Credential:
    """Generate a secret for `key_id` and return the full credential once.

    A key that already has a secret keeps it unless `replace` is given: replacing cuts off every client
    using the old secret at once, which `rotate_key` (with a grace period) avoids."""
    now = now or datetime.now(UTC)
    key = _get(session, key_id)
    if key.status in {"revoked", "disabled"}:
        raise ConfigError(f"key {key_id!r} is {key.status}; it cannot be issued")
    if key.secret_hash is not None and not replace:
        raise ConfigError(
            f"key {key_id!r} already has a secret: `quotagate keys rotate {key_id}` replaces it and keeps the old "
            f"one valid for a grace period; `quotagate keys issue {key_id} --replace` replaces it at once"
        )
    if expires_at is not None and expires_at <= now:
        raise ConfigError("--expires must be in the future")
    replaced = key.secret_hash is not None
    secret = new_secret()
    key.secret_hash = hasher.hash(key_id, secret)
    key.previous_secret_hash = None
    key.previous_valid_until = None
    key.issued_at = now
    if expires_at is not None:
        key.expires_at = expires_at
    key.updated_at = now
    record_admin_action(
        session,
        actor=actor,
        action="key.issue",
        target_type="gateway_key",
        target_id=key_id,
        organization_id=key.organization_id,
        # expires_at only when this call set it: the audit trail tells who owns a key's expiry (field_owner).
        after={"replaced": replaced, **({"expires_at": _iso(expires_at)} if expires_at is not None else {})},
        at=now,
    )
    bump_config_version(session, now)
    return Credential(key_id, secret)


def rotate_key(
    session: Session,
    hasher: SecretHasher,
    key_id: str,
    *,
    actor: str,
    grace: timedelta,
    now: datetime | None = None,
) -> Credential:
    """A new secret; the old one stays valid for `grace` so callers can switch without downtime."""
    now = now or datetime.now(UTC)
    key = _get(session, key_id)
    if key.status != "active":
        raise ConfigError(f"key {key_id!r} is {key.status}; only active keys rotate")
    if key.secret_hash is None:
        raise ConfigError(f"key {key_id!r} was never issued; use `quotagate keys issue`")
    secret = new_secret()
    key.previous_secret_hash = key.secret_hash if grace > timedelta(0) else None
    key.previous_valid_until = now + grace if grace > timedelta(0) else None
    key.secret_hash = hasher.hash(key_id, secret)
    key.issued_at = now
    key.updated_at = now
    record_admin_action(
        session,
        actor=actor,
        action="key.rotate",
        target_type="gateway_key",
        target_id=key_id,
        organization_id=key.organization_id,
        after={"grace_seconds": int(grace.total_seconds())},
        at=now,
    )
    bump_config_version(session, now)
    return Credential(key_id, secret)


_TRANSITIONS = {
    "suspend": ({"active"}, "suspended"),
    "resume": ({"suspended"}, "active"),
    "revoke": ({"active", "suspended"}, "revoked"),
}


def set_key_status(session: Session, key_id: str, verb: str, *, actor: str, now: datetime | None = None) -> str:
    """suspend | resume | revoke; revocation is final. Returns the new status."""
    now = now or datetime.now(UTC)
    allowed_from, target = _TRANSITIONS[verb]
    key = _get(session, key_id)
    if key.status == target:
        return target
    if key.status not in allowed_from:
        raise ConfigError(f"cannot {verb} key {key_id!r}: it is {key.status}")
    if verb == "resume" and key.managed_by == "manifest" and field_owner(session, key_id, "status") == "manifest":
        raise ConfigError(
            f"key {key_id!r} is suspended by the manifest: set its status to active there and apply the manifest"
        )
    before = key.status
    key.status = target
    if target == "revoked":
        key.previous_secret_hash = None
        key.previous_valid_until = None
    key.updated_at = now
    record_admin_action(
        session,
        actor=actor,
        action=f"key.{verb}",
        target_type="gateway_key",
        target_id=key_id,
        organization_id=key.organization_id,
        before={"status": before},
        after={"status": target},
        at=now,
    )
    bump_config_version(session, now)
    return target


def field_owner(session: Session, key_id: str, field: str) -> str:
    """Who last set `field` of the key: "manifest" (an apply) or "runtime" (the CLI or the admin API).

    Read from the audit trail, where every change records the fields it set. A restriction is lifted only by
    whoever set it: `keys resume` does not undo the manifest's `suspended`, an apply does not undo
    `keys suspend` or `keys issue --expires` (docs/manifest.md, "Who owns what")."""
    events = session.execute(
        select(AdminAuditEvent.action, AdminAuditEvent.after)
        .where(AdminAuditEvent.target_type == "gateway_key", AdminAuditEvent.target_id == key_id)
        .order_by(AdminAuditEvent.id.desc())
    )
    for action, after in events:
        if after and field in after:
            return "manifest" if action.startswith("manifest.") else "runtime"
    return "manifest"


def list_keys(session: Session, organization: str | None = None) -> list[KeyInfo]:
    query = (
        select(GatewayKey, Organization.slug, Project.slug, Client.name)
        .join(Organization, Organization.id == GatewayKey.organization_id)
        .join(Project, Project.id == GatewayKey.project_id)
        .join(Client, Client.id == GatewayKey.client_id)
        .order_by(Organization.slug, GatewayKey.key_id)
    )
    if organization:
        query = query.where((Organization.slug == organization) | (Organization.id == organization))
    return [
        KeyInfo(
            k.key_id,
            org,
            proj,
            client,
            k.status,
            k.secret_hash is not None,
            k.expires_at,
            k.issued_at,
            k.last_used_at,
            k.previous_valid_until,
        )
        for k, org, proj, client in session.execute(query)
    ]
