"""Reference and consistency checks that span several manifest objects. Each yields (path, message)."""

from __future__ import annotations

from collections.abc import Iterator

from quotagate.apis import API_BY_PATH
from quotagate.governance.alert_rules import AlertKind
from quotagate.manifest.schema import AlertRule, FeatureName, Manifest, Organization, Quota, ScopeType
from quotagate.models_catalog import split_model

Finding = tuple[str, str]


class CrossReference(tuple[str, str]):
    """A finding about another object (an unknown name, a missing rate): only meaningful when every object of
    the manifest validated, so it is left out when parts were skipped for structural errors (see partial.py)."""


def _cross(path: str, message: str) -> Finding:
    return CrossReference((path, message))


def check_references(manifest: Manifest) -> list[Finding]:
    return [
        *_features(manifest),
        *_rate_card(manifest),
        *_gateway(manifest),
        *_tenancy(manifest),
        *_alerts(manifest),
    ]


def _duplicates(items: list[tuple[str, str]], what: str) -> Iterator[Finding]:
    seen: dict[str, str] = {}
    for path, value in items:
        if value in seen:
            yield path, f"duplicate {what} {value!r} (first at {seen[value]})"
        else:
            seen[value] = path


def _features(m: Manifest) -> Iterator[Finding]:
    feats = m.deployment.enabled_features
    yield from _duplicates(
        [(f"deployment.enabled_features[{i}].name", f.name.value) for i, f in enumerate(feats)], "feature"
    )
    for i, f in enumerate(feats):
        if f.config is not None and f.name is not FeatureName.COST:
            yield f"deployment.enabled_features[{i}].config", f"only {FeatureName.COST.value} takes a config"


def _rate_card(m: Manifest) -> Iterator[Finding]:
    index = next((i for i, f in enumerate(m.deployment.enabled_features) if f.config is not None), None)
    cfg = m.cost_config
    if cfg is None or index is None:
        return
    base = f"deployment.enabled_features[{index}].config"
    yield from _duplicates(
        [(f"{base}.rate_units[{i}].provider", u.provider.value) for i, u in enumerate(cfg.rate_units)],
        "rate unit for provider",
    )
    yield from _duplicates(
        [(f"{base}.rates[{i}].model", f"{r.provider.value}/{r.model}") for i, r in enumerate(cfg.rates)],
        "rate for",
    )
    priced = {(r.provider, r.model) for r in cfg.rates}
    yield from _duplicates(
        [(f"{base}.cached_rates[{i}].model", f"{c.provider.value}/{c.model}") for i, c in enumerate(cfg.cached_rates)],
        "cached rate for",
    )
    for i, c in enumerate(cfg.cached_rates):
        if (c.provider, c.model) not in priced:
            yield _cross(f"{base}.cached_rates[{i}].model", f"no rate for {c.provider.value}/{c.model} in rates")
        if c.cache_read is None and c.cache_write is None:
            yield f"{base}.cached_rates[{i}]", "give cache_read and/or cache_write"
    for i, r in enumerate(cfg.rates):
        if "/" in r.model:
            yield f"{base}.rates[{i}].model", "use the provider field, not a provider/ prefix"


def _gateway(m: Manifest) -> Iterator[Finding]:
    gw = m.deployment.gateway
    yield from _duplicates(
        [(f"deployment.gateway.upstreams[{i}].name", u.name) for i, u in enumerate(gw.upstreams)], "upstream"
    )
    yield from _duplicates(
        [(f"deployment.gateway.credentials[{i}].provider", c.provider.value) for i, c in enumerate(gw.credentials)],
        "credential for provider",
    )
    yield from _duplicates(
        [(f"deployment.gateway.routes[{i}].location", r.location) for i, r in enumerate(gw.routes)], "route"
    )
    upstreams = {u.name for u in gw.upstreams}
    credentialed = {c.provider for c in gw.credentials}
    configured = set(m.deployment.configured_providers)
    for i, r in enumerate(gw.routes):
        path = f"deployment.gateway.routes[{i}]"
        if r.upstream not in upstreams:
            yield _cross(f"{path}.upstream", f"unknown upstream {r.upstream!r}")
        if r.provider not in credentialed:
            yield _cross(
                f"{path}.provider",
                f"no credential for provider {r.provider.value!r} in deployment.gateway.credentials",
            )
        if configured and r.provider not in configured:
            yield _cross(
                f"{path}.provider",
                f"provider {r.provider.value!r} is not in deployment.configured_providers",
            )
        if r.dialect.value != r.provider.value:
            yield (
                f"{path}.dialect",
                f"dialect {r.dialect.value!r} does not match provider {r.provider.value!r}",
            )
        if not r.location.endswith("/") and r.location not in API_BY_PATH:
            yield (
                f"{path}.location",
                (
                    f"{r.location!r} is neither a supported endpoint ({', '.join(sorted(API_BY_PATH))}) "
                    "nor a prefix ending in '/'"
                ),
            )
    for i, u in enumerate(gw.upstreams):
        if not u.tls and u.ssl_name:
            yield f"deployment.gateway.upstreams[{i}].ssl_name", "ssl_name needs tls: true"


def _tenancy(m: Manifest) -> Iterator[Finding]:
    org_ids, org_slugs, project_ids, client_ids, key_ids = [], [], [], [], []
    for oi, org in enumerate(m.organizations):
        op = f"organizations[{oi}]"
        org_ids.append((f"{op}.organization_id", org.organization_id))
        org_slugs.append((f"{op}.organization_slug", org.organization_slug))
        slugs = []
        for pi, project in enumerate(org.projects):
            pp = f"{op}.projects[{pi}]"
            project_ids.append((f"{pp}.project_id", project.project_id))
            slugs.append((f"{pp}.project_slug", project.project_slug))
            for ci, client in enumerate(project.clients):
                cp = f"{pp}.clients[{ci}]"
                client_ids.append((f"{cp}.client_id", client.client_id))
                for ki, key in enumerate(client.api_keys):
                    key_ids.append((f"{cp}.api_keys[{ki}].key_id", key.key_id))
                    for mi, model in enumerate(key.models or []):
                        yield from _known_model(m, f"{cp}.api_keys[{ki}].models[{mi}]", model)
        yield from _duplicates(slugs, "project slug")
        yield from _quotas(m, op, org.quotas, _scope_ids(org))
    yield from _duplicates(org_ids, "organization id")
    yield from _duplicates(org_slugs, "organization slug")
    yield from _duplicates(project_ids, "project id")
    yield from _duplicates(client_ids, "client id")
    yield from _duplicates(key_ids, "key id")


def _scope_ids(org: Organization) -> dict[ScopeType, set[str]]:
    projects = {p.project_id for p in org.projects}
    clients = {c.client_id for p in org.projects for c in p.clients}
    keys = {k.key_id for p in org.projects for c in p.clients for k in c.api_keys}
    return {ScopeType.PROJECT: projects, ScopeType.CLIENT: clients, ScopeType.KEY: keys}


_SCOPE_FIELD = {ScopeType.PROJECT: "project_id", ScopeType.CLIENT: "client_id", ScopeType.KEY: "key_id"}


def _quotas(m: Manifest, op: str, quotas: list[Quota], ids: dict[ScopeType, set[str]]) -> Iterator[Finding]:
    units = {u.unit for u in (m.cost_config.rate_units if m.cost_config else [])}
    identities: list[tuple[str, str]] = []
    for qi, q in enumerate(quotas):
        qp = f"{op}.quotas[{qi}]"
        yield from scope_reference(qp, q, ids)
        limits = (q.rpm_limit, q.tpm_limit, q.monthly_spend_limit, q.model_allowlist)
        if all(v is None for v in limits) and not q.prepaid:
            yield qp, "a quota needs one of rpm_limit, tpm_limit, monthly_spend_limit, prepaid or model_allowlist"
        if q.monthly_spend_limit is not None:
            if q.monthly_spend_unit is None:
                yield f"{qp}.monthly_spend_unit", "required with monthly_spend_limit"
            elif units and q.monthly_spend_unit not in units:
                yield _cross(
                    f"{qp}.monthly_spend_unit",
                    f"{q.monthly_spend_unit!r} is not a rate unit of the rate card ({', '.join(sorted(units))})",
                )
        elif q.monthly_spend_unit is not None:
            yield f"{qp}.monthly_spend_unit", "only meaningful with monthly_spend_limit"
        for mi, model in enumerate(q.model_allowlist or []):
            yield from _known_model(m, f"{qp}.model_allowlist[{mi}]", model)
        for mi, model in enumerate(q.applies_to_models or []):
            yield from _known_model(m, f"{qp}.applies_to_models[{mi}]", model)
        identities.append((f"{qp}", quota_identity(q)))
    for path, message in _duplicates(identities, "quota"):
        yield path, message + "; give one of them a quota_id"


def scope_reference(
    path: str, item: Quota | AlertRule, ids: dict[ScopeType, set[str]] | None = None
) -> Iterator[Finding]:
    """The id field of the item's scope_type is given and names an object of the organization (one of `ids`;
    None: not looked up, the admin API looks it up itself); no other is set."""
    wanted = _SCOPE_FIELD.get(item.scope_type)
    for scope, field in _SCOPE_FIELD.items():
        value = getattr(item, field)
        if field == wanted:
            if value is None:
                yield f"{path}.{field}", f"required for scope_type {item.scope_type.value!r}"
            elif ids is not None and value not in ids[scope]:
                yield _cross(f"{path}.{field}", f"unknown {scope.value} {value!r} in this organization")
        elif value is not None:
            yield f"{path}.{field}", f"not allowed for scope_type {item.scope_type.value!r}"


def scope_id_of(item: Quota | AlertRule, org_id: str) -> str | None:
    if item.scope_type is ScopeType.ORGANIZATION:
        return org_id
    return getattr(item, _SCOPE_FIELD[item.scope_type])  # type: ignore[no-any-return]


# The limit a rule measures against: its scope needs a quota setting it.
_RULE_LIMIT = {AlertKind.SPEND_CAP: "monthly_spend_limit", AlertKind.TPM_SATURATION: "tpm_limit"}


def _alerts(m: Manifest) -> Iterator[Finding]:
    for oi, org in enumerate(m.organizations):
        if org.alerts is None:
            continue
        ap = f"organizations[{oi}].alerts"
        receivers = org.alerts.receivers
        yield from _duplicates([(f"{ap}.receivers[{i}].name", r.name) for i, r in enumerate(receivers)], "receiver")
        yield from _duplicates(
            [(f"{ap}.rules[{i}].rule_id", r.rule_id) for i, r in enumerate(org.alerts.rules)], "alert rule"
        )
        names = {r.name for r in receivers}
        ids = _scope_ids(org)
        for ri, rule in enumerate(org.alerts.rules):
            rp = f"{ap}.rules[{ri}]"
            yield from scope_reference(rp, rule, ids)
            for i, name in enumerate(rule.receivers):
                if name not in names:
                    yield _cross(f"{rp}.receivers[{i}]", f"unknown receiver {name!r}")
            if not names:
                yield _cross(f"{rp}.receivers", "the organization has no alert receivers")
            limit = _RULE_LIMIT.get(rule.kind)
            scope_id = scope_id_of(rule, org.organization_id)
            if limit and not any(
                q.scope_type is rule.scope_type
                and scope_id_of(q, org.organization_id) == scope_id
                and getattr(q, limit) is not None
                for q in org.quotas
            ):
                yield _cross(rp, f"kind {rule.kind.value!r} needs a quota with {limit} on this scope")


def _known_model(m: Manifest, path: str, model: str) -> Iterator[Finding]:
    cfg = m.cost_config
    if cfg is None:
        yield _cross(path, f"model {model!r}: the manifest has no llm-cost rate card")
        return
    provider, name = split_model(model)
    if not any(r.model == name and (provider is None or r.provider == provider) for r in cfg.rates):
        yield _cross(path, f"model {model!r} has no rate in the rate card")


def quota_identity(q: Quota) -> str:
    """A quota's stable id: its quota_id, or its scope, limit kinds and models (order-insensitive)."""
    if q.quota_id:
        return q.quota_id
    target = q.project_id or q.client_id or q.key_id or "org"
    kinds = [k for k in ("rpm_limit", "tpm_limit", "monthly_spend_limit", "prepaid") if getattr(q, k)]
    models = ",".join(sorted(q.model_allowlist or []))
    # Only quotas that use applies_to_models get the extra part, so existing derived ids stay the same.
    applies = f":for={','.join(sorted(q.applies_to_models))}" if q.applies_to_models else ""
    return f"{q.scope_type.value}:{target}:{'+'.join(kinds)}:{models}{applies}"
