"""Alerts in the store: rules and receivers, the figures rules measure, firings (the dedup authority
across processes) with their ledger entries, and the delivery outbox.

Receivers and rules come from the manifest (`managed_by="manifest"`) or from the admin API through
`put_receiver` / `put_rule` / `disable_alert_object` (`managed_by="api"`, left alone by manifest apply).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from quotagate.errors import ConfigError, NotFoundError
from quotagate.governance.alert_rules import AlertKind, Candidate, LimitFigure, RuleView
from quotagate.manifest.desired import alert_receiver_row, alert_rule_row
from quotagate.manifest.schema import AlertReceiver as ReceiverSpec
from quotagate.manifest.schema import AlertRule as RuleSpec
from quotagate.models_catalog import split_model
from quotagate.store.audit import record_admin_action
from quotagate.store.ledger_repo import NewEntry, append_entries, lock_org_chain
from quotagate.store.tables import (
    AlertDelivery,
    AlertFiring,
    AlertReceiver,
    AlertRule,
    Client,
    GatewayKey,
    Organization,
    Project,
    Quota,
    UsageEvent,
)

ACTIVE = "active"
_Config = TypeVar("_Config", AlertReceiver, AlertRule)
_SCOPE_COLUMN = {
    "organization": UsageEvent.organization_id,
    "project": UsageEvent.project_id,
    "client": UsageEvent.client_id,
    "key": UsageEvent.key_id,
}
_TOKENS = (
    UsageEvent.input_tokens + UsageEvent.cached_input_tokens + UsageEvent.cache_write_tokens + UsageEvent.output_tokens
)


# -- rules and the figures they measure -----------------------------------------------------------


def active_rules(session: Session) -> list[RuleView]:
    return [
        RuleView(
            r.id,
            r.organization_id,
            r.rule_id,
            AlertKind(r.kind),
            r.scope_type,
            r.scope_id,
            r.params,
            tuple(r.receivers),
        )
        for r in session.scalars(select(AlertRule).where(AlertRule.status == ACTIVE).order_by(AlertRule.id))
    ]


def scope_label(session: Session, scope_type: str, scope_id: str) -> str:
    name: str | None = None
    if scope_type == "organization":
        name = session.scalar(select(Organization.slug).where(Organization.id == scope_id))
    elif scope_type == "project":
        name = session.scalar(select(Project.slug).where(Project.id == scope_id))
    elif scope_type == "client":
        name = session.scalar(select(Client.name).where(Client.id == scope_id))
    return f"{scope_type} {name or scope_id}"


def _sum(
    session: Session,
    total: ColumnElement[int] | InstrumentedAttribute[int],
    rule: RuleView,
    start: datetime,
    end: datetime,
    models: list[str] | None,
) -> int:
    query = (
        select(func.coalesce(func.sum(total), 0))
        .where(_SCOPE_COLUMN[rule.scope_type] == rule.scope_id)
        .where(UsageEvent.started_at >= start, UsageEvent.started_at < end)
        .where(UsageEvent.decision == "allowed")
    )
    if models is not None:  # a model-specific quota counts only its models (as the counters do)
        bare = {split_model(m)[1] for m in models}
        query = query.where(UsageEvent.model_served.in_(bare) | UsageEvent.model_requested.in_(bare))
    return int(session.scalar(query) or 0)


def _scope_quotas(session: Session, rule: RuleView, column: Any) -> list[Quota]:
    return list(
        session.scalars(
            select(Quota)
            .where(Quota.organization_id == rule.org_id, Quota.status == ACTIVE)
            .where(Quota.scope_type == rule.scope_type, Quota.scope_id == rule.scope_id)
            .where(column.is_not(None))
            .order_by(Quota.id)
        )
    )


def spend_figures(session: Session, rule: RuleView, start: datetime, end: datetime) -> list[LimitFigure]:
    """Spend this month against each monthly cap on the rule's scope."""
    return [
        LimitFigure(
            q.id,
            _sum(session, UsageEvent.cost_nanos, rule, start, end, q.limited_models),
            int(q.monthly_spend_nanos or 0),
            q.monthly_spend_unit,
        )
        for q in _scope_quotas(session, rule, Quota.monthly_spend_nanos)
    ]


def tpm_figures(session: Session, rule: RuleView, start: datetime, end: datetime) -> list[LimitFigure]:
    """Tokens of the requests admitted in [start, end) (one minute window) against each TPM limit."""
    return [
        LimitFigure(q.id, _sum(session, _TOKENS, rule, start, end, q.limited_models), int(q.tpm_limit or 0))
        for q in _scope_quotas(session, rule, Quota.tpm_limit)
    ]


def spend_between(session: Session, rule: RuleView, start: datetime, end: datetime) -> int:
    return _sum(session, UsageEvent.cost_nanos, rule, start, end, None)


# -- firings: recorded once, in the ledger, with their deliveries -----------------------------------


def record_firings(session: Session, rule: RuleView, candidates: list[Candidate], now: datetime) -> list[int]:
    """Record the candidates not yet recorded for their period; returns the ids of firings to deliver.

    The organization's chain lock is taken first: it serializes recorders on PostgreSQL (advisory
    lock) and SQLite (IMMEDIATE), so the existence check below sees every committed firing and two
    processes never record the same one (the unique key is the backstop). Of one subject's thresholds
    crossed at once, only the highest is delivered; the others are recorded as superseded."""
    if not candidates:
        return []
    lock_org_chain(session, rule.org_id)
    seen = {
        (s, t, p)
        for s, t, p in session.execute(
            select(AlertFiring.subject, AlertFiring.threshold, AlertFiring.period).where(
                AlertFiring.rule_id == rule.id, AlertFiring.period.in_({c.period for c in candidates})
            )
        )
    }
    new = [c for c in candidates if (c.subject, c.threshold, c.period) not in seen]
    if not new:
        return []
    top: dict[str, Candidate] = {}
    for c in new:
        if c.subject not in top or c.rank > top[c.subject].rank:
            top[c.subject] = c
    receivers = _receiver_ids(session, rule)
    delivered: list[int] = []
    entries: list[NewEntry] = []
    for c in new:
        firing = AlertFiring(
            organization_id=rule.org_id,
            rule_id=rule.id,
            subject=c.subject,
            threshold=c.threshold,
            period=c.period,
            fired_at=now,
            delivered=top[c.subject] is c,
            message=c.message,
            observed=c.observed,
        )
        session.add(firing)
        session.flush()
        if not firing.delivered:
            continue
        delivered.append(firing.id)
        session.add_all(
            AlertDelivery(firing_id=firing.id, receiver_id=r, status="pending", attempts=0, next_attempt_at=now)
            for r in receivers
        )
        superseded = [o.threshold for o in new if o.subject == c.subject and o is not c]
        entries.append(
            NewEntry(
                "alert",
                f"alert:{firing.id}",
                0,
                {
                    "rule": rule.rule_id,
                    "kind": rule.kind.value,
                    "scope_type": rule.scope_type,
                    "scope_id": rule.scope_id,
                    "subject": c.subject,
                    "threshold": c.threshold,
                    "period": c.period,
                    "superseded": superseded,
                    "observed": c.observed,
                    "receivers": receivers,
                },
            )
        )
    append_entries(session, rule.org_id, entries, now)
    return delivered


def _receiver_ids(session: Session, rule: RuleView) -> list[str]:
    query = select(AlertReceiver.id).where(AlertReceiver.organization_id == rule.org_id, AlertReceiver.status == ACTIVE)
    if rule.receivers:
        query = query.where(AlertReceiver.name.in_(rule.receivers))
    return sorted(session.scalars(query))


# -- the delivery outbox ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryJob:
    delivery_id: int
    attempts: int  # before this one
    format: str
    url: str  # maybe env:VAR
    signing_secret: str | None  # maybe env:VAR
    event: dict[str, Any]


def due_deliveries(session: Session, now: datetime, limit: int = 100) -> list[int]:
    return list(
        session.scalars(
            select(AlertDelivery.id)
            .where(AlertDelivery.status == "pending", AlertDelivery.next_attempt_at <= now)
            .where(or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until < now))
            .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
            .limit(limit)
        )
    )


def claim_delivery(session: Session, delivery_id: int, now: datetime, lease_until: datetime) -> DeliveryJob | None:
    """Take a due delivery for this process until `lease_until` (None: another process has it, or it is done)."""
    claimed = session.connection().execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == delivery_id, AlertDelivery.status == "pending")
        .where(AlertDelivery.next_attempt_at <= now)
        .where(or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until < now))
        .values(claimed_until=lease_until)
    )
    if claimed.rowcount != 1:
        return None
    row = session.execute(
        select(AlertDelivery, AlertFiring, AlertRule, AlertReceiver)
        .join(AlertFiring, AlertFiring.id == AlertDelivery.firing_id)
        .join(AlertRule, AlertRule.id == AlertFiring.rule_id)
        .join(AlertReceiver, AlertReceiver.id == AlertDelivery.receiver_id)
        .where(AlertDelivery.id == delivery_id)
    ).one()
    delivery, firing, rule, receiver = row
    if receiver.status != ACTIVE:  # disabled since the firing: nothing to send it to
        delivery.status, delivery.claimed_until, delivery.last_error = "failed", None, "receiver disabled"
        return None
    org_slug = session.scalar(select(Organization.slug).where(Organization.id == firing.organization_id))
    event = {
        "type": "quotagate.alert",
        "id": str(firing.id),
        "test": False,
        "organization": {"id": firing.organization_id, "slug": org_slug},
        "rule": {"id": rule.rule_id, "kind": rule.kind},
        "scope": {
            "type": rule.scope_type,
            "id": rule.scope_id,
            "name": scope_label(session, rule.scope_type, rule.scope_id).split(" ", 1)[1],
        },
        "subject": firing.subject,
        "threshold": firing.threshold,
        "period": firing.period,
        "observed": firing.observed,
        "message": firing.message,
        "fired_at": firing.fired_at.astimezone(UTC).isoformat(),
    }
    return DeliveryJob(delivery.id, delivery.attempts, receiver.format, receiver.url, receiver.signing_secret, event)


def finish_delivery(
    session: Session, delivery_id: int, *, error: str | None, now: datetime, retry_at: datetime | None
) -> None:
    """Record an attempt: delivered, or retried at `retry_at`, or (retry_at None) failed for good."""
    delivery = session.get(AlertDelivery, delivery_id)
    if delivery is None:
        return
    delivery.attempts += 1
    delivery.claimed_until = None
    delivery.last_error = error
    if error is None:
        delivery.status, delivery.delivered_at = "delivered", now
    elif retry_at is None:
        delivery.status = "failed"
    else:
        delivery.next_attempt_at = retry_at


# -- for the admin API ------------------------------------------------------------------------------


def list_receivers(session: Session, org_id: str | None, *, active_only: bool = False) -> list[dict[str, Any]]:
    """Receivers of an organization (None: of all); `url` and `signing_secret` are as written (env:VAR or a URL)."""
    query = select(AlertReceiver).order_by(AlertReceiver.organization_id, AlertReceiver.name)
    if org_id is not None:
        query = query.where(AlertReceiver.organization_id == org_id)
    if active_only:
        query = query.where(AlertReceiver.status == ACTIVE)
    return [_public(r) for r in session.scalars(query)]


def list_rules(session: Session, org_id: str) -> list[dict[str, Any]]:
    return [
        _public(r)
        for r in session.scalars(
            select(AlertRule).where(AlertRule.organization_id == org_id).order_by(AlertRule.rule_id)
        )
    ]


def get_alert_object(session: Session, org_id: str, kind: str, name: str) -> dict[str, Any]:
    """kind: receiver | rule; NotFoundError unless the organization has one of that name."""
    model: type[AlertReceiver] | type[AlertRule] = AlertReceiver if kind == "receiver" else AlertRule
    obj = session.get(model, f"{org_id}:{name}")
    if obj is None:
        raise NotFoundError(f"no alert {kind} {name!r} in organization {org_id!r}")
    return _public(obj)


def list_firings(session: Session, org_id: str, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
    """Newest first (ids below `before`, when given), each with its deliveries' states."""
    query = select(AlertFiring).where(AlertFiring.organization_id == org_id)
    if before is not None:
        query = query.where(AlertFiring.id < before)
    firings = list(session.scalars(query.order_by(AlertFiring.id.desc()).limit(limit)))
    deliveries: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if firings:
        for d in session.scalars(
            select(AlertDelivery).where(AlertDelivery.firing_id.in_([f.id for f in firings])).order_by(AlertDelivery.id)
        ):
            deliveries[d.firing_id].append(
                {
                    "receiver": d.receiver_id.split(":", 1)[1],
                    "status": d.status,
                    "attempts": d.attempts,
                    "error": d.last_error,
                }
            )
    return [{**_public(f), "deliveries": deliveries[f.id]} for f in firings]


def put_receiver(session: Session, org_id: str, spec: ReceiverSpec, actor: str) -> dict[str, Any]:
    _require_org(session, org_id)
    return _put(session, AlertReceiver, f"{org_id}:{spec.name}", alert_receiver_row(org_id, spec), org_id, actor)


def put_rule(session: Session, org_id: str, spec: RuleSpec, actor: str) -> dict[str, Any]:
    _require_org(session, org_id)
    row = alert_rule_row(org_id, spec)
    owner = {
        "project": select(Project.organization_id).where(Project.id == row["scope_id"]),
        "client": select(Client.organization_id).where(Client.id == row["scope_id"]),
        "key": select(GatewayKey.organization_id).where(GatewayKey.key_id == row["scope_id"]),
    }.get(spec.scope_type.value)
    if owner is not None and session.scalar(owner) != org_id:
        raise NotFoundError(f"no {spec.scope_type.value} {row['scope_id']!r} in organization {org_id!r}")
    names = set(session.scalars(select(AlertReceiver.name).where(AlertReceiver.organization_id == org_id)))
    if unknown := sorted(set(spec.receivers) - names):
        raise ConfigError(f"unknown receiver(s) {unknown} in organization {org_id!r}")
    _require_limit(session, org_id, spec, row["scope_id"])
    return _put(session, AlertRule, f"{org_id}:{spec.rule_id}", row, org_id, actor)


# The limit a rule measures against, as the manifest checks it: its scope must have a quota setting it.
_RULE_LIMIT = {
    AlertKind.SPEND_CAP: (Quota.monthly_spend_nanos, "monthly_spend_limit"),
    AlertKind.TPM_SATURATION: (Quota.tpm_limit, "tpm_limit"),
}


def _require_limit(session: Session, org_id: str, spec: RuleSpec, scope_id: str) -> None:
    if spec.kind not in _RULE_LIMIT:
        return
    column, limit = _RULE_LIMIT[spec.kind]
    found = session.scalar(
        select(func.count())
        .select_from(Quota)
        .where(Quota.organization_id == org_id, Quota.status == ACTIVE, column.is_not(None))
        .where(Quota.scope_type == spec.scope_type.value, Quota.scope_id == scope_id)
    )
    if not found:
        raise ConfigError(f"kind {spec.kind.value!r} needs an active quota with {limit} on this scope")


def disable_alert_object(session: Session, org_id: str, kind: str, name: str, actor: str) -> dict[str, Any]:
    """kind: receiver | rule. Disabled, not deleted: firings and the ledger keep referring to it."""
    if kind == "receiver":
        return _disable(session, AlertReceiver, org_id, name, actor)
    return _disable(session, AlertRule, org_id, name, actor)


def _disable(session: Session, model: type[_Config], org_id: str, name: str, actor: str) -> dict[str, Any]:
    kind = model.__tablename__.removeprefix("alert_").removesuffix("s")
    lock_org_chain(session, org_id)  # before any write (see lock_org_chain)
    obj = session.get(model, f"{org_id}:{name}")
    if obj is None:
        raise NotFoundError(f"no alert {kind} {name!r} in organization {org_id!r}")
    before = obj.status
    obj.status, obj.updated_at = "disabled", datetime.now(UTC)
    record_admin_action(
        session,
        actor=actor,
        action=f"alert_{kind}.disable",
        target_type=f"alert_{kind}",
        target_id=obj.id,
        organization_id=org_id,
        before={"status": before},
        after={"status": "disabled"},
    )
    return _public(obj)


def organization_slugs(session: Session) -> dict[str, str]:
    return {org_id: slug for org_id, slug in session.execute(select(Organization.id, Organization.slug))}


def _require_org(session: Session, org_id: str) -> None:
    if session.get(Organization, org_id) is None:
        raise NotFoundError(f"no organization {org_id!r}")


def _put(
    session: Session,
    model: type[_Config],
    ident: str,
    row: dict[str, Any],
    org_id: str,
    actor: str,
) -> dict[str, Any]:
    lock_org_chain(session, org_id)  # before any write (see lock_org_chain)
    now = datetime.now(UTC)
    obj = session.get(model, ident)
    before = None if obj is None else {k: getattr(obj, k) for k in row}
    if obj is None:
        obj = model(id=ident, **row, managed_by="api", created_at=now, updated_at=now)
        session.add(obj)
    else:
        for name, value in row.items():
            setattr(obj, name, value)
        obj.updated_at = now
    session.flush()
    record_admin_action(
        session,
        actor=actor,
        action=f"{model.__tablename__}.put",
        target_type=model.__tablename__,
        target_id=ident,
        organization_id=org_id,
        before=before,
        after=row,
        at=now,
    )
    return _public(obj)


def _public(obj: Any) -> dict[str, Any]:
    return {c.name: getattr(obj, c.name) for c in obj.__table__.columns}
