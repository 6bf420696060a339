"""Which quotas govern a request, and whether its model is allowed."""

from __future__ import annotations

import hashlib

from quotagate.identity.authenticate import Identity
from quotagate.limits.model import LimitCheck
from quotagate.snapshot import QuotaView, Snapshot


def quotas_for(snapshot: Snapshot, identity: Identity) -> tuple[QuotaView, ...]:
    """Every active quota on the request's organization, project, client (sub-account) and key."""
    scopes = (
        ("organization", identity.org.id),
        ("project", identity.project.id),
        ("client", identity.client.id),
        ("key", identity.key.key_id),
    )
    found: list[QuotaView] = []
    for scope in scopes:
        found.extend(snapshot.quotas.get(scope, ()))
    return tuple(found)


def quotas_of(snapshot: Snapshot, org_id: str, project_id: str, client_id: str, key_id: str) -> tuple[QuotaView, ...]:
    """``quotas_for`` by ids (the response side knows the request's ids, not its Identity)."""
    found: list[QuotaView] = []
    for scope in (("organization", org_id), ("project", project_id), ("client", client_id), ("key", key_id)):
        found.extend(snapshot.quotas.get(scope, ()))
    return tuple(found)


def model_allowed(identity: Identity, quotas: tuple[QuotaView, ...], model: str) -> bool:
    """A key's own `models` list must contain the model; and for each scope whose enforced quotas carry
    allowlists, the model must be in the union of those lists (monitor quotas never refuse). A quota's
    `applies_to_models` only selects what it limits (``limit_checks``), never what is allowed."""
    if identity.key.models is not None and model not in identity.key.models:
        return False
    allowed_by_scope: dict[tuple[str, str], set[str]] = {}
    for q in quotas:
        if q.enforce and q.model_allowlist is not None:
            allowed_by_scope.setdefault((q.scope_type, q.scope_id), set()).update(q.model_allowlist)
    return all(model in allowed for allowed in allowed_by_scope.values())


def counter_id(quota: QuotaView) -> str:
    """Short, stable counter name for a quota (quota ids are long; Redis keys stay small)."""
    return hashlib.blake2b(quota.id.encode(), digest_size=8).hexdigest()


def credit_id(quota: QuotaView) -> str:
    return f"{quota.scope_type}:{quota.scope_id}"


def limit_checks(quotas: tuple[QuotaView, ...], model: str) -> tuple[LimitCheck, ...]:
    """The checks of the quotas that limit requests for `model` (``QuotaView.applies_to``)."""
    return tuple(
        LimitCheck(
            counter_id=counter_id(q),
            enforce=q.enforce,
            rpm_limit=q.rpm_limit,
            tpm_limit=q.tpm_limit,
            spend_limit_nanos=q.monthly_spend_nanos,
            prepaid=q.prepaid,
            credit_id=credit_id(q) if q.prepaid else None,
        )
        for q in quotas
        if q.applies_to(model) and (q.rpm_limit or q.tpm_limit or q.monthly_spend_nanos is not None or q.prepaid)
    )
