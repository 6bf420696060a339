"""Provider credentials: stored encrypted, rotated in one place; the secret is never returned or logged."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from quotagate.apis import Provider
from quotagate.errors import ConfigError
from quotagate.secret_box import SecretBox
from quotagate.store.audit import record_admin_action
from quotagate.store.config_state import bump_config_version
from quotagate.store.tables import ProviderCredential


def set_provider_key(
    session: Session,
    box: SecretBox,
    provider: Provider,
    secret: str,
    *,
    actor: str,
    now: datetime | None = None,
) -> int:
    """Store (or rotate) the provider key; every process picks it up on its next config poll. Returns its version."""
    secret = secret.strip()
    if not secret or any(ch in secret for ch in "\r\n\0"):
        raise ConfigError("the provider key is empty or contains line breaks")
    now = now or datetime.now(UTC)
    row = session.get(ProviderCredential, provider.value)
    if row is None:
        row = ProviderCredential(
            provider=provider.value,
            source="stored",
            env_var=None,
            key_version=0,
            status="active",
            managed_by="api",
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    # env_var stays: it is the manifest's `env:VAR`, used again after `clear_provider_key`.
    _switch(session, row, box.seal(secret, provider.value), "stored", "upstream.set_key", actor=actor, now=now)
    return row.key_version


def clear_provider_key(session: Session, provider: Provider, *, actor: str, now: datetime | None = None) -> str:
    """Forget the stored key: the provider's `env:VAR` reference (from the manifest) is used again. Returns VAR."""
    now = now or datetime.now(UTC)
    row = session.get(ProviderCredential, provider.value)
    if row is None or row.ciphertext is None:
        raise ConfigError(f"no key is stored for {provider.value}")
    if row.env_var is None:
        raise ConfigError(
            f"{provider.value} has no env:VAR reference to fall back to (the manifest declares it `stored`, or "
            "does not list it): store a new key with `quotagate upstream set-key` instead"
        )
    _switch(session, row, None, "env", "upstream.clear_key", actor=actor, now=now, env_var=row.env_var)
    return row.env_var


def _switch(
    session: Session,
    row: ProviderCredential,
    ciphertext: bytes | None,
    source: str,
    action: str,
    *,
    actor: str,
    now: datetime,
    **shown: str,
) -> None:
    """Put the key `source` (and `ciphertext`) in use as the next version, audited (`shown`: more of the
    new state for the audit trail; never the secret), and tell every process."""
    before = {"source": row.source, "version": row.key_version}
    row.ciphertext, row.source = ciphertext, source
    row.key_version = (row.key_version or 0) + 1
    row.updated_at = now
    record_admin_action(
        session,
        actor=actor,
        action=action,
        target_type="provider_credential",
        target_id=row.provider,
        before=before,
        after={"source": source, **shown, "version": row.key_version},
        at=now,
    )
    bump_config_version(session, now)
