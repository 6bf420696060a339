"""Pydantic models of the manifest (the shape of seed 003, extended where noted with "ext:").

Structure and types are checked here; references between objects (a quota naming a project, a route
naming an upstream) are checked by :mod:`quotagate.manifest.checks`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from quotagate.apis import Provider
from quotagate.governance.actors import ActorPolicy, NoncePolicy
from quotagate.governance.alert_rules import AlertFormat, AlertKind
from quotagate.governance.ip import parse_network
from quotagate.governance.policy import PromptLogMode
from quotagate.governance.redaction import check_custom_pattern

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
# The key id is the part of a credential before the first dot, so it cannot contain one.
KeyId = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
Price = Annotated[Decimal, Field(ge=0, max_digits=24, decimal_places=12)]
ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")]
# Secrets are never in the manifest: an environment variable the gateway reads at use.
EnvRef = Annotated[str, Field(pattern=r"^env:[A-Za-z_][A-Za-z0-9_]*$")]


def _cidr(value: str) -> str:
    try:
        return str(parse_network(value))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR ({exc})") from None


def _regex(value: str) -> str:
    check_custom_pattern(value)  # compiles as the writer runs it, and refuses catastrophic backtracking
    return value


# An IPv4 or IPv6 network (`10.0.0.0/8`, `2001:db8::/32`) or one address; host bits must be zero.
Cidr = Annotated[str, Field(min_length=2, max_length=64), AfterValidator(_cidr)]
IpAllowlist = Annotated[list[Cidr], Field(min_length=1, max_length=1000)]


class Strict(BaseModel):
    """Unknown fields are errors: a typo must not silently disable a limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Status(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DISABLED = "disabled"


class KeyStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class EnforcementMode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"


class ScopeType(StrEnum):
    ORGANIZATION = "organization"
    PROJECT = "project"
    CLIENT = "client"  # a sub-account is a client of type sub_account
    KEY = "key"  # ext: per gateway key


class ClientType(StrEnum):
    GATEWAY_KEY = "gateway_key"
    SUB_ACCOUNT = "sub_account"  # ext: created per end customer through the sub-account API
    SERVICE = "service"  # ext


class Customer(Strict):
    serial: str | None = None
    company: str | None = None
    contact: str | None = None
    product: str | None = None


class RateUnit(Strict):
    provider: Provider
    unit: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[a-z]+$")]


class Rate(Strict):
    provider: Provider
    model: ModelName
    input: Price
    output: Price
    cache_read: Price | None = None  # ext: may also be given here instead of cached_rates
    cache_write: Price | None = None  # ext: Anthropic cache creation; default = input rate
    multiplier: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=6)] = Decimal(1)  # ext
    max_output_tokens: Annotated[int, Field(gt=0)] | None = None  # ext: reserved when a request sets none


class CachedRate(Strict):
    provider: Provider
    model: ModelName
    cache_read: Price | None = None
    cache_write: Price | None = None  # ext


class CostConfig(Strict):
    rate_card_version: Annotated[str, Field(min_length=1, max_length=128)]
    rate_units: list[RateUnit] = []
    rates: list[Rate] = []
    cached_rates: list[CachedRate] = []


class FeatureName(StrEnum):
    AUTH = "llm-auth"
    PROXY = "llm-proxy"
    RATELIMIT = "llm-ratelimit"
    COST = "llm-cost"
    METRICS = "llm-metrics"


class Feature(Strict):
    name: FeatureName
    enabled: bool = True
    notes: str | None = None
    config: CostConfig | None = None  # only llm-cost carries a config (the rate card)


class Upstream(Strict):
    name: Identifier
    server: Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")]
    ssl_name: str | None = None
    keepalive: Annotated[int, Field(ge=0, le=100_000)] | None = None
    tls: bool = True  # ext: false for plain-HTTP local providers

    @field_validator("server")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        port = int(value.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range 1-65535")
        return value

    @property
    def host(self) -> str:
        return self.server.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.server.rsplit(":", 1)[1])


class Credential(Strict):
    provider: Provider
    # "env:VAR" is read from the environment at use; "stored" uses the encrypted key set with
    # `quotagate upstream set-key`.
    api_key: Annotated[str, Field(pattern=r"^(env:[A-Za-z_][A-Za-z0-9_]*|stored)$")]


class Dialect(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Route(Strict):
    location: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]*$", max_length=256)]
    provider: Provider
    dialect: Dialect
    upstream: Identifier
    auth_fail_closed: bool = True


class Gateway(Strict):
    upstreams: list[Upstream] = []
    credentials: list[Credential] = []
    routes: list[Route] = []


class Deployment(Strict):
    environment_id: Identifier
    environment_name: str | None = None
    deployment_id: str | None = None
    product_version: str | None = None
    enabled_features: list[Feature] = []
    configured_providers: list[Provider] = []
    gateway: Gateway = Gateway()


class ActorSettings(Strict):
    """ext: signed actor identity (user/team/app) on the requests of a project's keys."""

    policy: ActorPolicy = ActorPolicy.OFF
    signing_secret: EnvRef | None = None
    # required: only v2 signatures (with a nonce, each accepted once); optional: v1 (window only) too
    nonce: NoncePolicy = NoncePolicy.OPTIONAL

    @model_validator(mode="after")
    def _secret_when_on(self) -> ActorSettings:
        if self.policy is not ActorPolicy.OFF and self.signing_secret is None:
            raise ValueError(f"policy {self.policy.value!r} needs a signing_secret (env:VAR)")
        return self


class RedactPattern(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    pattern: Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_regex)]


class PromptLogging(Strict):
    """ext: whether prompts and responses are stored (never on the request's path) and for how long."""

    mode: PromptLogMode = PromptLogMode.OFF
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    redact: list[RedactPattern] = []  # custom rules, applied after the built-in ones (mode: redacted)

    @model_validator(mode="after")
    def _redact_only_when_redacting(self) -> PromptLogging:
        if self.redact and self.mode is not PromptLogMode.REDACTED:
            raise ValueError("redact patterns apply only with mode: redacted")
        return self


class ApiKey(Strict):
    key_id: KeyId
    tier: str | None = None
    status: KeyStatus = KeyStatus.ACTIVE
    models: list[ModelName] | None = None  # ext: per-key model allowlist
    expires_at: datetime | None = None  # ext
    ip_allowlist: IpAllowlist | None = None  # ext


class Client(Strict):
    client_id: Identifier
    client_name: Annotated[str, Field(min_length=1, max_length=200)]
    client_type: ClientType = ClientType.GATEWAY_KEY
    status: Status = Status.ACTIVE
    default_tag: str | None = None  # ext: cost tag recorded on every usage event
    ip_allowlist: IpAllowlist | None = None  # ext
    api_keys: list[ApiKey] = []


class Project(Strict):
    project_id: Identifier
    project_slug: Slug
    project_name: Annotated[str, Field(min_length=1, max_length=200)]
    status: Status = Status.ACTIVE
    ip_allowlist: IpAllowlist | None = None  # ext
    actors: ActorSettings | None = None  # ext
    prompt_logging: PromptLogging | None = None  # ext
    clients: list[Client] = []


# The rule of the manifest and of the admin API (quotas_repo) alike.
MODEL_SELECTORS_EXCLUSIVE = (
    "model_allowlist and applies_to_models are exclusive: model_allowlist already limits only its models "
    "(and refuses the others); use applies_to_models to limit some models without refusing any"
)


class Quota(Strict):
    quota_id: Identifier | None = None  # ext: stable identity; derived from the quota's shape when absent
    scope_type: ScopeType
    project_id: Identifier | None = None
    client_id: Identifier | None = None
    key_id: KeyId | None = None
    rpm_limit: Annotated[int, Field(gt=0, le=10**9)] | None = None
    tpm_limit: Annotated[int, Field(gt=0, le=10**12)] | None = None
    monthly_spend_limit: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=9)] | None = None
    monthly_spend_unit: str | None = None
    prepaid: bool = False  # ext: requests must be covered by the scope's prepaid credit balance
    enforcement_mode: EnforcementMode = EnforcementMode.ENFORCE
    # Restricts the scope to these models *and* limits only requests for them (seed 003).
    model_allowlist: list[ModelName] | None = None
    # ext: the limits count only requests for these models; other models are neither limited nor refused by it.
    applies_to_models: Annotated[list[ModelName], Field(min_length=1)] | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _one_model_selector(self) -> Quota:
        if self.model_allowlist is not None and self.applies_to_models is not None:
            raise ValueError(MODEL_SELECTORS_EXCLUSIVE)
        return self


Percent = Annotated[int, Field(ge=1, le=1000)]
Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=9)]


class AlertReceiver(Strict):
    name: Identifier
    format: AlertFormat = AlertFormat.JSON
    # An http(s) URL, or env:VAR when the URL itself is a secret (Slack incoming webhooks are).
    url: Annotated[str, Field(max_length=2000, pattern=r"^(https?://[^\s]+|env:[A-Za-z_][A-Za-z0-9_]*)$")]
    signing_secret: EnvRef | None = None  # HMAC key of the signature header; required for format json

    @model_validator(mode="after")
    def _json_is_signed(self) -> AlertReceiver:
        if self.format is AlertFormat.JSON and self.signing_secret is None:
            raise ValueError("a json receiver needs a signing_secret (env:VAR)")
        return self


# Which fields each kind of rule takes (beyond its identity, scope and receivers).
_RULE_FIELDS = {
    AlertKind.SPEND_CAP: {"thresholds"},
    AlertKind.TPM_SATURATION: {"thresholds"},
    AlertKind.CREDIT_BALANCE: {"below"},
    AlertKind.SPEND_ANOMALY: {"factor", "window_minutes", "baseline_days", "min_spend"},
}


class AlertRule(Strict):
    rule_id: Identifier
    kind: AlertKind
    scope_type: ScopeType = ScopeType.ORGANIZATION
    project_id: Identifier | None = None
    client_id: Identifier | None = None
    key_id: KeyId | None = None
    thresholds: Annotated[list[Percent], Field(min_length=1, max_length=10)] | None = None  # % of the limit
    below: Amount | None = None  # credit_balance: alert when the balance drops below this
    factor: Annotated[Decimal, Field(gt=1, max_digits=8, decimal_places=3)] = Decimal(3)
    window_minutes: Annotated[int, Field(ge=5, le=1440)] = 60
    baseline_days: Annotated[int, Field(ge=1, le=90)] = 7
    min_spend: Amount | None = None  # spend_anomaly: no alert below this spend in the window
    receivers: list[Identifier] = []  # empty: every receiver of the organization
    notes: str | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> AlertRule:
        allowed = _RULE_FIELDS[self.kind]
        extra = sorted((set().union(*_RULE_FIELDS.values()) - allowed) & self.model_fields_set)
        if extra:
            raise ValueError(f"{', '.join(extra)} not allowed for kind {self.kind.value!r}")
        if self.kind is AlertKind.CREDIT_BALANCE and self.below is None:
            raise ValueError("kind 'credit_balance' needs below")
        if self.kind is AlertKind.SPEND_ANOMALY and self.min_spend is None:
            raise ValueError("kind 'spend_anomaly' needs min_spend")
        return self

    @property
    def effective_thresholds(self) -> list[int]:
        default = [90] if self.kind is AlertKind.TPM_SATURATION else [50, 80, 100]
        return sorted(set(self.thresholds or default))


class Alerts(Strict):
    """ext: webhooks fired once per threshold per period (docs/governance.md)."""

    receivers: list[AlertReceiver] = []
    rules: list[AlertRule] = []


class Organization(Strict):
    organization_id: Identifier
    organization_slug: Slug
    organization_name: Annotated[str, Field(min_length=1, max_length=200)]
    environment_id: Identifier | None = None
    status: Status = Status.ACTIVE
    runtime: dict[str, Any] = {}
    quotas: list[Quota] = []
    alerts: Alerts | None = None  # ext
    projects: list[Project] = []


class Manifest(Strict):
    customer: Customer | None = None
    deployment: Deployment
    organizations: list[Organization] = []

    @property
    def cost_config(self) -> CostConfig | None:
        for feature in self.deployment.enabled_features:
            if feature.name is FeatureName.COST and feature.enabled and feature.config is not None:
                return feature.config
        return None


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema of the manifest, generated from these models (validation-side view)."""
    schema = Manifest.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Quotagate manifest"
    return schema
