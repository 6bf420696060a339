"""Quotas through the admin API: the manifest's fields and rules, on any scope the caller may see."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quotagate.errors import ConfigError, ConflictError, NotFoundError
from quotagate.manifest.schema import MODEL_SELECTORS_EXCLUSIVE
from quotagate.models_catalog import split_model
from quotagate.money import MAX_NANOS, nanos_from_units, units
from quotagate.store.audit import record_admin_action
from quotagate.store.config_state import bump_config_version, get_config_state
from quotagate.store.paging_repo import keyset_page
from quotagate.store.tables import Client, GatewayKey, Project, Quota, RateCardEntry
from quotagate.store.tenancy_repo import find_org

LIMIT_FIELDS = (
    "rpm_limit",
    "tpm_limit",
    "monthly_spend_limit",
    "monthly_spend_unit",
    "prepaid",
    "model_allowlist",
    "applies_to_models",
)
EDITABLE = (*LIMIT_FIELDS, "enforcement_mode", "notes", "status")


def quota_json(q: Quota) -> dict[str, Any]:
    return {
        "quota_id": q.id,
        "organization_id": q.organization_id,
        "scope_type": q.scope_type,
        "scope_id": q.scope_id,
        "rpm_limit": q.rpm_limit,
        "tpm_limit": q.tpm_limit,
        "monthly_spend_limit": None if q.monthly_spend_nanos is None else _units_text(q.monthly_spend_nanos),
        "monthly_spend_nanos": q.monthly_spend_nanos,
        "monthly_spend_unit": q.monthly_spend_unit,
        "prepaid": q.prepaid,
        "enforcement_mode": q.enforcement_mode,
        "model_allowlist": q.model_allowlist,
        "applies_to_models": q.applies_to_models,
        "notes": q.notes,
        "status": q.status,
        "managed_by": q.managed_by,
        "created_at": q.created_at,
        "updated_at": q.updated_at,
    }


def _units_text(nanos: int) -> str:
    return format(units(nanos).normalize(), "f")


def check_models(session: Session, models: list[str]) -> list[str]:
    """Every model must have a rate in the active rate card (as the manifest requires); returns them sorted."""
    version = get_config_state(session).active_rate_card
    priced = set(
        session.execute(select(RateCardEntry.provider, RateCardEntry.model).where(RateCardEntry.version == version))
    )
    for model in models:
        provider, name = split_model(model)
        if not any(m == name and (provider is None or p == provider.value) for p, m in priced):
            raise ConfigError(f"model {model!r} has no rate in the active rate card")
    return sorted(set(models))


def scope_org(session: Session, scope_type: str, scope_id: str, scope: str | None) -> tuple[str, str]:
    """(organization id, canonical scope id) of a quota or credit scope the caller may see."""
    if scope_type == "organization":
        org = find_org(session, scope_id, scope)
        return org.id, org.id
    model: type[Any] = {"project": Project, "client": Client, "key": GatewayKey}[scope_type]
    row = session.get(model, scope_id)
    if row is None or (scope is not None and row.organization_id != scope):
        raise NotFoundError(f"no {scope_type} {scope_id!r}")
    return str(row.organization_id), scope_id


def get_quota(session: Session, quota_id: str, scope: str | None) -> Quota:
    row = session.get(Quota, quota_id)
    if row is None or (scope is not None and row.organization_id != scope):
        raise NotFoundError(f"no quota {quota_id!r}")
    return row


def list_quotas(
    session: Session,
    scope: str | None,
    *,
    organization: str | None = None,
    scope_type: str | None = None,
    scope_id: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(Quota)
    if scope is not None:
        stmt = stmt.where(Quota.organization_id == scope)
    if organization is not None:
        stmt = stmt.where(Quota.organization_id == find_org(session, organization, scope).id)
    if scope_type is not None:
        stmt = stmt.where(Quota.scope_type == scope_type)
    if scope_id is not None:
        stmt = stmt.where(Quota.scope_id == scope_id)
    rows, last = keyset_page(session, stmt, Quota.id, after, limit)
    return [quota_json(r) for r in rows], last


def _limit_columns(session: Session, values: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if k not in {"monthly_spend_limit", "model_allowlist", "applies_to_models"}}
    if "monthly_spend_limit" in values:
        limit: Decimal | None = values["monthly_spend_limit"]
        try:
            nanos = None if limit is None else nanos_from_units(limit)
        except ValueError as exc:
            raise ConfigError(f"monthly_spend_limit: {exc}") from exc
        if nanos is not None and nanos >= MAX_NANOS:
            raise ConfigError(f"monthly_spend_limit: must be below {units(MAX_NANOS)} (exact counter range)")
        out["monthly_spend_nanos"] = nanos
    for field in ("model_allowlist", "applies_to_models"):
        if field in values:
            models = values[field]
            out[field] = None if models is None else check_models(session, models)
    return out


def _check_limits(q: Quota) -> None:
    limits = (q.rpm_limit, q.tpm_limit, q.monthly_spend_nanos, q.model_allowlist)
    if all(v is None for v in limits) and not q.prepaid:
        raise ConfigError("a quota needs one of rpm_limit, tpm_limit, monthly_spend_limit, prepaid or model_allowlist")
    if q.model_allowlist is not None and q.applies_to_models is not None:
        raise ConfigError(MODEL_SELECTORS_EXCLUSIVE)
    if q.monthly_spend_nanos is not None and q.monthly_spend_unit is None:
        raise ConfigError("monthly_spend_unit is required with monthly_spend_limit")
    if q.monthly_spend_nanos is None and q.monthly_spend_unit is not None:
        raise ConfigError("monthly_spend_unit is only meaningful with monthly_spend_limit")


def create_quota(session: Session, values: dict[str, Any], scope: str | None, *, actor: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    org_id, scope_id = scope_org(session, values["scope_type"], values["scope_id"], scope)
    quota_id = f"{org_id}:{values.get('quota_id') or 'api-' + secrets.token_hex(6)}"
    if session.get(Quota, quota_id) is not None:
        raise ConflictError(f"quota id {quota_id!r} is already in use")
    columns = _limit_columns(session, {k: values[k] for k in EDITABLE if k in values})
    row = Quota(
        id=quota_id,
        organization_id=org_id,
        scope_type=values["scope_type"],
        scope_id=scope_id,
        managed_by="api",
        created_at=now,
        updated_at=now,
        **{"status": "active", "enforcement_mode": "enforce", "prepaid": False, **columns},
    )
    _check_limits(row)
    session.add(row)
    session.flush()
    record_admin_action(
        session,
        actor=actor,
        action="quota.create",
        target_type="quota",
        target_id=quota_id,
        organization_id=org_id,
        after=_audit(quota_json(row)),
        at=now,
    )
    bump_config_version(session, now)
    return quota_json(row)


def update_quota(
    session: Session, quota_id: str, changes: dict[str, Any], scope: str | None, *, actor: str
) -> dict[str, Any]:
    row = get_quota(session, quota_id, scope)
    columns = _limit_columns(session, {k: v for k, v in changes.items() if k in EDITABLE})
    diff = {c: (getattr(row, c), v) for c, v in columns.items() if getattr(row, c) != v}
    if not diff:
        return quota_json(row)
    if row.managed_by != "api":
        raise ConflictError(f"quota {quota_id!r} is managed by the manifest; change the manifest and apply it instead")
    now = datetime.now(UTC)
    for column, (_, after) in diff.items():
        setattr(row, column, after)
    _check_limits(row)
    row.updated_at = now
    record_admin_action(
        session,
        actor=actor,
        action="quota.update",
        target_type="quota",
        target_id=quota_id,
        organization_id=row.organization_id,
        before={c: b for c, (b, _) in diff.items()},
        after={c: a for c, (_, a) in diff.items()},
        at=now,
    )
    bump_config_version(session, now)
    return quota_json(row)


def _audit(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
