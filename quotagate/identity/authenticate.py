"""Authentication: a credential -> the key's identity, or the reason it is refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from quotagate.identity.credentials import Credential, MalformedCredential, SecretHasher, same_digest
from quotagate.snapshot import ClientView, KeyView, OrgView, ProjectView, Snapshot


class AuthFailure(StrEnum):
    """Reason codes; the 401 ones are deliberately indistinguishable to the caller."""

    MISSING_CREDENTIAL = "missing_credential"  # 401
    INVALID_CREDENTIAL = "invalid_credential"  # 401: malformed, unknown key id, wrong secret, never issued
    KEY_SUSPENDED = "key_suspended"  # 403
    KEY_REVOKED = "key_revoked"  # 403
    KEY_EXPIRED = "key_expired"  # 403
    KEY_DISABLED = "key_disabled"  # 403: removed from the manifest
    CLIENT_DISABLED = "client_disabled"  # 403
    PROJECT_DISABLED = "project_disabled"  # 403
    ORGANIZATION_DISABLED = "organization_disabled"  # 403

    @property
    def status(self) -> int:
        return 401 if self in (AuthFailure.MISSING_CREDENTIAL, AuthFailure.INVALID_CREDENTIAL) else 403


@dataclass(frozen=True, slots=True)
class Identity:
    key: KeyView
    client: ClientView
    project: ProjectView
    org: OrgView


_KEY_STATUS = {
    "suspended": AuthFailure.KEY_SUSPENDED,
    "revoked": AuthFailure.KEY_REVOKED,
    "disabled": AuthFailure.KEY_DISABLED,
}


def authenticate(
    snapshot: Snapshot, hasher: SecretHasher, credential: Credential | MalformedCredential | None, now: datetime
) -> Identity | AuthFailure:
    if credential is None:
        return AuthFailure.MISSING_CREDENTIAL
    if isinstance(credential, MalformedCredential):  # its shape is public knowledge: no hash work to hide
        return AuthFailure.INVALID_CREDENTIAL
    key = snapshot.keys.get(credential.key_id)
    # One hash and two constant-time comparisons whatever the case (unknown id, wrong secret, a key in its
    # rotation grace period): the time taken does not tell which. Both hashes bind the same key id, so one
    # candidate digest serves the current and the previous secret.
    candidate = hasher.hash(credential.key_id, credential.secret)
    in_grace = (
        key is not None
        and key.previous_secret_hash is not None
        and key.previous_valid_until is not None
        and now < key.previous_valid_until
    )
    current = same_digest(candidate, key.secret_hash if key is not None else None)
    previous = same_digest(candidate, key.previous_secret_hash if key is not None and in_grace else None)
    if key is None or not (current or previous):
        return AuthFailure.INVALID_CREDENTIAL
    # Status is checked only after the secret verified: an unauthenticated caller learns nothing.
    if key.status != "active":
        return _KEY_STATUS.get(key.status, AuthFailure.KEY_DISABLED)
    if key.expires_at is not None and now >= key.expires_at:
        return AuthFailure.KEY_EXPIRED
    client = snapshot.clients[key.client_id]
    project = snapshot.projects[key.project_id]
    org = snapshot.orgs[key.org_id]
    if org.status != "active":
        return AuthFailure.ORGANIZATION_DISABLED
    if project.status != "active":
        return AuthFailure.PROJECT_DISABLED
    if client.status != "active":
        return AuthFailure.CLIENT_DISABLED
    return Identity(key, client, project, org)
