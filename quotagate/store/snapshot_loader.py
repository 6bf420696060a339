"""Builds the in-memory Snapshot from the database (a handful of queries, run on change, never per request)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from quotagate.apis import Provider
from quotagate.governance.policy import build_governance
from quotagate.models_catalog import split_model
from quotagate.snapshot import (
    ClientView,
    CredentialRef,
    KeyView,
    OrgView,
    Price,
    ProjectView,
    QuotaView,
    RouteView,
    Snapshot,
    UpstreamView,
)
from quotagate.store import tables as t
from quotagate.store.config_state import get_config_state


def load_snapshot(session: Session) -> Snapshot:
    state = get_config_state(session)
    orgs = {o.id: OrgView(o.id, o.slug, o.name, o.status) for o in session.scalars(select(t.Organization))}
    project_rows = list(session.scalars(select(t.Project)))
    projects = {p.id: ProjectView(p.id, p.organization_id, p.slug, p.name, p.status) for p in project_rows}
    client_rows = list(session.scalars(select(t.Client)))
    clients = {
        c.id: ClientView(c.id, c.organization_id, c.project_id, c.name, c.client_type, c.status, c.default_tag)
        for c in client_rows
    }
    key_rows = list(session.scalars(select(t.GatewayKey)))
    keys = {
        k.key_id: KeyView(
            key_id=k.key_id,
            org_id=k.organization_id,
            project_id=k.project_id,
            client_id=k.client_id,
            status=k.status,
            secret_hash=k.secret_hash,
            tier=k.tier,
            models=_bare(k.models),
            expires_at=k.expires_at,
            previous_secret_hash=k.previous_secret_hash,
            previous_valid_until=k.previous_valid_until,
        )
        for k in key_rows
    }
    governance = build_governance(
        [
            *(("project", p.id, p.ip_allowlist) for p in project_rows),
            *(("client", c.id, c.ip_allowlist) for c in client_rows),
            *(("key", k.key_id, k.ip_allowlist) for k in key_rows),
        ],
        ((p.id, p.actors, p.prompt_logging) for p in project_rows),
    )
    quotas: dict[tuple[str, str], list[QuotaView]] = defaultdict(list)
    for q in session.scalars(select(t.Quota).where(t.Quota.status == "active").order_by(t.Quota.id)):
        quotas[(q.scope_type, q.scope_id)].append(
            QuotaView(
                id=q.id,
                org_id=q.organization_id,
                scope_type=q.scope_type,
                scope_id=q.scope_id,
                enforce=q.enforcement_mode == "enforce",
                rpm_limit=q.rpm_limit,
                tpm_limit=q.tpm_limit,
                monthly_spend_nanos=q.monthly_spend_nanos,
                unit=q.monthly_spend_unit,
                prepaid=q.prepaid,
                model_allowlist=_bare(q.model_allowlist),
                applies_to_models=_bare(q.applies_to_models),
            )
        )
    prices: dict[tuple[Provider, str], Price] = {}
    if state.active_rate_card:
        for e in session.scalars(select(t.RateCardEntry).where(t.RateCardEntry.version == state.active_rate_card)):
            provider = Provider(e.provider)
            prices[(provider, e.model)] = Price(
                provider=provider,
                model=e.model,
                unit=e.unit,
                input=e.input,
                output=e.output,
                cache_read=e.cache_read,
                cache_write=e.cache_write,
                multiplier=e.multiplier,
                version=e.version,
                max_output_tokens=e.max_output_tokens,
            )
    routes = sorted(
        (
            RouteView(r.location, Provider(r.provider), r.upstream, r.auth_fail_closed)
            for r in session.scalars(select(t.Route).where(t.Route.status == "active"))
        ),
        key=lambda r: len(r.location),
        reverse=True,
    )
    upstreams = {}
    for u in session.scalars(select(t.Upstream).where(t.Upstream.status == "active")):
        host, _, port = u.server.rpartition(":")
        upstreams[u.name] = UpstreamView(u.name, host.strip("[]"), int(port), u.tls, u.ssl_name, u.keepalive)
    credentials = {
        Provider(c.provider): CredentialRef(Provider(c.provider), c.source, c.env_var, c.ciphertext, c.key_version)
        for c in session.scalars(select(t.ProviderCredential).where(t.ProviderCredential.status == "active"))
    }
    return Snapshot(
        version=state.version,
        orgs=orgs,
        projects=projects,
        clients=clients,
        keys=keys,
        quotas={k: tuple(v) for k, v in quotas.items()},
        rate_card_version=state.active_rate_card,
        prices=prices,
        routes=tuple(routes),
        upstreams=upstreams,
        credentials=credentials,
        governance=governance,
    )


def _bare(models: list[str] | None) -> frozenset[str] | None:
    """Allowlists compare bare model names: `openai/gpt-5.4` and `gpt-5.4` are the same entry."""
    return None if models is None else frozenset(split_model(m)[1] for m in models)
