"""A manifest flattened into the rows it wants, per kind and id: what `plan` compares with the store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from quotagate.governance.alert_rules import AlertKind
from quotagate.manifest.checks import quota_identity, scope_id_of
from quotagate.manifest.schema import AlertReceiver, AlertRule, Manifest, Organization
from quotagate.money import nanos_from_units

Row = dict[str, Any]

# Order matters: parents before children when creating.
KINDS = (
    "upstream",
    "route",
    "credential",
    "organization",
    "project",
    "client",
    "gateway_key",
    "quota",
    "alert_receiver",
    "alert_rule",
)


@dataclass(frozen=True)
class RateCardRows:
    version: str
    content_sha256: str
    entries: list[Row]


@dataclass(frozen=True)
class DesiredState:
    rows: dict[str, dict[str, Row]] = field(default_factory=dict)
    rate_card: RateCardRows | None = None
    deployment: Row = field(default_factory=dict)
    # kind -> id -> where the object is in the manifest (`organizations[0].quotas[1]`), for error messages.
    paths: dict[str, dict[str, str]] = field(default_factory=dict)


def desired_state(m: Manifest) -> DesiredState:
    rows: dict[str, dict[str, Row]] = {kind: {} for kind in KINDS}
    gw = m.deployment.gateway
    for u in gw.upstreams:
        rows["upstream"][u.name] = {
            "server": u.server,
            "ssl_name": u.ssl_name,
            "keepalive": u.keepalive,
            "tls": u.tls,
            "status": "active",
        }
    for r in gw.routes:
        rows["route"][r.location] = {
            "provider": r.provider.value,
            "dialect": r.dialect.value,
            "upstream": r.upstream,
            "auth_fail_closed": r.auth_fail_closed,
            "status": "active",
        }
    for cred in gw.credentials:
        source, _, var = cred.api_key.partition(":")
        rows["credential"][cred.provider.value] = {
            "source": "env" if source == "env" else "stored",
            "env_var": var or None,
            "status": "active",
        }
    for org in m.organizations:
        rows["organization"][org.organization_id] = {
            "slug": org.organization_slug,
            "name": org.organization_name,
            "environment_id": org.environment_id,
            "status": org.status.value,
            "runtime": org.runtime,
        }
        key_scope: dict[str, str] = {}
        for p in org.projects:
            rows["project"][p.project_id] = {
                "organization_id": org.organization_id,
                "slug": p.project_slug,
                "name": p.project_name,
                "status": p.status.value,
                "ip_allowlist": p.ip_allowlist,
                "actors": p.actors.model_dump(mode="json") if p.actors else None,
                "prompt_logging": p.prompt_logging.model_dump(mode="json") if p.prompt_logging else None,
            }
            for c in p.clients:
                rows["client"][c.client_id] = {
                    "organization_id": org.organization_id,
                    "project_id": p.project_id,
                    "name": c.client_name,
                    "client_type": c.client_type.value,
                    "status": c.status.value,
                    "default_tag": c.default_tag,
                    "ip_allowlist": c.ip_allowlist,
                }
                for k in c.api_keys:
                    key_scope[k.key_id] = c.client_id
                    rows["gateway_key"][k.key_id] = {
                        "organization_id": org.organization_id,
                        "project_id": p.project_id,
                        "client_id": c.client_id,
                        "tier": k.tier,
                        "status": k.status.value,
                        "models": k.models,
                        "expires_at": k.expires_at,
                        "ip_allowlist": k.ip_allowlist,
                    }
        for q in org.quotas:
            scope_id = scope_id_of(q, org.organization_id)
            rows["quota"][f"{org.organization_id}:{quota_identity(q)}"] = {
                "organization_id": org.organization_id,
                "scope_type": q.scope_type.value,
                "scope_id": scope_id,
                "rpm_limit": q.rpm_limit,
                "tpm_limit": q.tpm_limit,
                "monthly_spend_nanos": None
                if q.monthly_spend_limit is None
                else nanos_from_units(q.monthly_spend_limit),
                "monthly_spend_unit": q.monthly_spend_unit,
                "prepaid": q.prepaid,
                "enforcement_mode": q.enforcement_mode.value,
                "model_allowlist": sorted(q.model_allowlist) if q.model_allowlist is not None else None,
                "applies_to_models": sorted(q.applies_to_models) if q.applies_to_models is not None else None,
                "notes": q.notes,
                "status": "active",
            }
        _alert_rows(org, rows)
    return DesiredState(rows=rows, rate_card=_rate_card(m), deployment=_deployment(m), paths=_paths(m))


def _alert_rows(org: Organization, rows: dict[str, dict[str, Row]]) -> None:
    if org.alerts is None:
        return
    for r in org.alerts.receivers:
        rows["alert_receiver"][f"{org.organization_id}:{r.name}"] = alert_receiver_row(org.organization_id, r)
    for rule in org.alerts.rules:
        rows["alert_rule"][f"{org.organization_id}:{rule.rule_id}"] = alert_rule_row(org.organization_id, rule)


def alert_receiver_row(org_id: str, r: AlertReceiver) -> Row:
    """The stored row of a receiver (the manifest and the admin API write the same shape)."""
    return {
        "organization_id": org_id,
        "name": r.name,
        "format": r.format.value,
        "url": r.url,
        "signing_secret": r.signing_secret,
        "status": "active",
    }


def alert_rule_row(org_id: str, rule: AlertRule) -> Row:
    return {
        "organization_id": org_id,
        "rule_id": rule.rule_id,
        "kind": rule.kind.value,
        "scope_type": rule.scope_type.value,
        "scope_id": scope_id_of(rule, org_id),
        "params": _rule_params(rule),
        "receivers": sorted(rule.receivers),
        "notes": rule.notes,
        "status": "active",
    }


def _rule_params(rule: AlertRule) -> Row:
    if rule.kind in (AlertKind.SPEND_CAP, AlertKind.TPM_SATURATION):
        return {"thresholds": rule.effective_thresholds}
    if rule.kind is AlertKind.CREDIT_BALANCE:
        assert rule.below is not None
        return {"below_nanos": nanos_from_units(rule.below)}
    assert rule.min_spend is not None
    return {
        "factor": format(rule.factor.normalize(), "f"),
        "window_minutes": rule.window_minutes,
        "baseline_days": rule.baseline_days,
        "min_spend_nanos": nanos_from_units(rule.min_spend),
    }


def _rate_card(m: Manifest) -> RateCardRows | None:
    cfg = m.cost_config
    if cfg is None:
        return None
    units = {u.provider.value: u.unit for u in cfg.rate_units}
    cached = {(c.provider, c.model): c for c in cfg.cached_rates}
    entries: list[Row] = []
    for r in cfg.rates:
        c = cached.get((r.provider, r.model))
        entries.append(
            {
                "provider": r.provider.value,
                "model": r.model,
                "unit": units.get(r.provider.value, "usd"),
                "input": r.input,
                "output": r.output,
                "cache_read": r.cache_read if r.cache_read is not None else (c.cache_read if c else None),
                "cache_write": r.cache_write if r.cache_write is not None else (c.cache_write if c else None),
                "multiplier": r.multiplier,
                "max_output_tokens": r.max_output_tokens,
            }
        )
    entries.sort(key=lambda e: (e["provider"], e["model"]))
    return RateCardRows(cfg.rate_card_version, _content_hash(entries), entries)


def _content_hash(entries: list[Row]) -> str:
    def norm(v: Any) -> Any:
        return format(v.normalize(), "f") if isinstance(v, Decimal) else v

    text = json.dumps([{k: norm(v) for k, v in e.items()} for e in entries], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _deployment(m: Manifest) -> Row:
    d = m.deployment
    return {
        "customer": m.customer.model_dump(mode="json") if m.customer else None,
        "environment_id": d.environment_id,
        "environment_name": d.environment_name,
        "deployment_id": d.deployment_id,
        "product_version": d.product_version,
        "features": {f.name.value: f.enabled for f in d.enabled_features},
        "configured_providers": [p.value for p in d.configured_providers],
    }


def _paths(m: Manifest) -> dict[str, dict[str, str]]:
    """The manifest location of every object `desired_state` makes a row of, keyed like its rows."""
    paths: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    gw = "deployment.gateway"
    paths["upstream"] = {u.name: f"{gw}.upstreams[{i}]" for i, u in enumerate(m.deployment.gateway.upstreams)}
    paths["route"] = {r.location: f"{gw}.routes[{i}]" for i, r in enumerate(m.deployment.gateway.routes)}
    paths["credential"] = {
        c.provider.value: f"{gw}.credentials[{i}]" for i, c in enumerate(m.deployment.gateway.credentials)
    }
    for oi, org in enumerate(m.organizations):
        op = f"organizations[{oi}]"
        paths["organization"][org.organization_id] = op
        for pi, project in enumerate(org.projects):
            pp = f"{op}.projects[{pi}]"
            paths["project"][project.project_id] = pp
            for ci, client in enumerate(project.clients):
                cp = f"{pp}.clients[{ci}]"
                paths["client"][client.client_id] = cp
                for ki, key in enumerate(client.api_keys):
                    paths["gateway_key"][key.key_id] = f"{cp}.api_keys[{ki}]"
        for qi, q in enumerate(org.quotas):
            paths["quota"][f"{org.organization_id}:{quota_identity(q)}"] = f"{op}.quotas[{qi}]"
        if org.alerts is not None:
            for i, r in enumerate(org.alerts.receivers):
                paths["alert_receiver"][f"{org.organization_id}:{r.name}"] = f"{op}.alerts.receivers[{i}]"
            for i, rule in enumerate(org.alerts.rules):
                paths["alert_rule"][f"{org.organization_id}:{rule.rule_id}"] = f"{op}.alerts.rules[{i}]"
    return paths
