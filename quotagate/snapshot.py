"""The in-memory, immutable view of the configuration that every decision reads (no SQL on the hot path).

A store loader builds a new Snapshot whenever the config version changes; readers swap the reference
atomically, so a decision always sees one consistent version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from quotagate.apis import Provider
from quotagate.governance.policy import Governance


@dataclass(frozen=True, slots=True)
class OrgView:
    id: str
    slug: str
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class ProjectView:
    id: str
    org_id: str
    slug: str
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class ClientView:
    id: str
    org_id: str
    project_id: str
    name: str
    client_type: str
    status: str
    default_tag: str | None = None


@dataclass(frozen=True, slots=True)
class KeyView:
    key_id: str
    org_id: str
    project_id: str
    client_id: str
    status: str
    secret_hash: str | None
    tier: str | None = None
    models: frozenset[str] | None = None
    expires_at: datetime | None = None
    previous_secret_hash: str | None = None
    previous_valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class QuotaView:
    id: str
    org_id: str
    scope_type: str  # organization | project | client | key
    scope_id: str
    enforce: bool
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    monthly_spend_nanos: int | None = None
    unit: str | None = None
    prepaid: bool = False
    model_allowlist: frozenset[str] | None = None  # restricts the scope to these models, and limits only them
    applies_to_models: frozenset[str] | None = None  # limits only these models, restricts nothing

    @property
    def limited_models(self) -> frozenset[str] | None:
        """The models whose requests this quota's limits count (None: every model)."""
        return self.applies_to_models if self.applies_to_models is not None else self.model_allowlist

    def applies_to(self, model: str) -> bool:
        models = self.limited_models
        return models is None or model in models


@dataclass(frozen=True, slots=True)
class Price:
    """Per 1M tokens, in `unit`, from rate card `version`."""

    provider: Provider
    model: str
    unit: str
    input: Decimal
    output: Decimal
    cache_read: Decimal | None
    cache_write: Decimal | None
    multiplier: Decimal
    version: str
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class RouteView:
    location: str
    provider: Provider
    upstream: str
    auth_fail_closed: bool = True


@dataclass(frozen=True, slots=True)
class UpstreamView:
    name: str
    host: str
    port: int
    tls: bool
    ssl_name: str | None
    keepalive: int | None


@dataclass(frozen=True, slots=True)
class CredentialRef:
    provider: Provider
    source: str  # env | stored
    env_var: str | None
    ciphertext: bytes | None
    version: int


@dataclass(frozen=True)
class Snapshot:
    version: int = 0
    orgs: dict[str, OrgView] = field(default_factory=dict)
    projects: dict[str, ProjectView] = field(default_factory=dict)
    clients: dict[str, ClientView] = field(default_factory=dict)
    keys: dict[str, KeyView] = field(default_factory=dict)
    # (scope_type, scope_id) -> quotas on that scope
    quotas: dict[tuple[str, str], tuple[QuotaView, ...]] = field(default_factory=dict)
    rate_card_version: str | None = None
    prices: dict[tuple[Provider, str], Price] = field(default_factory=dict)
    routes: tuple[RouteView, ...] = ()  # longest location first
    upstreams: dict[str, UpstreamView] = field(default_factory=dict)
    credentials: dict[Provider, CredentialRef] = field(default_factory=dict)
    governance: Governance = field(default_factory=Governance)  # IP allowlists, actor and prompt-logging policies

    def route_for(self, path: str) -> RouteView | None:
        for route in self.routes:
            loc = route.location
            if path == loc or (loc.endswith("/") and path.startswith(loc)):
                return route
        return None

    def models_of(self, provider: Provider) -> list[str]:
        return sorted(model for (p, model) in self.prices if p == provider)
