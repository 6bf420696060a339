"""SQLAlchemy models: tenancy, keys, quotas, rate cards, upstreams, usage events, ledger, audit."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from quotagate.store.types import DecimalText, UTCDateTime

# Deterministic constraint names so Alembic migrations are stable on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), Decimal: DecimalText(), dict[str, Any]: JSON()}


class Managed:
    """Who owns a row: `manifest` rows are disabled when a manifest no longer lists them; `api` rows are not."""

    managed_by: Mapped[str] = mapped_column(String(16), default="manifest")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ConfigState(Base):
    """One row: the configuration version every process polls to refresh its in-memory snapshot."""

    __tablename__ = "config_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    active_rate_card: Mapped[str | None] = mapped_column(String(128))
    deployment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class Organization(Managed, Base):
    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    environment_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    runtime: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Project(Managed, Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("organization_id", "slug"),)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip_allowlist: Mapped[list[str] | None] = mapped_column(JSON)  # CIDRs; None: any address
    actors: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # signed actor policy (manifest shape)
    prompt_logging: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # prompt-logging policy (manifest shape)


class Client(Managed, Base):
    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    client_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    default_tag: Mapped[str | None] = mapped_column(String(200))
    ip_allowlist: Mapped[list[str] | None] = mapped_column(JSON)


class GatewayKey(Managed, Base):
    __tablename__ = "gateway_keys"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), index=True)
    tier: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    models: Mapped[list[str] | None] = mapped_column(JSON)
    expires_at: Mapped[datetime | None]
    # Hex digests only; the secret itself is never stored.
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64))
    previous_valid_until: Mapped[datetime | None]
    issued_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    ip_allowlist: Mapped[list[str] | None] = mapped_column(JSON)


class Quota(Managed, Base):
    __tablename__ = "quotas"
    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    scope_type: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(128))
    rpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    tpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    monthly_spend_nanos: Mapped[int | None] = mapped_column(BigInteger)
    monthly_spend_unit: Mapped[str | None] = mapped_column(String(16))
    prepaid: Mapped[bool] = mapped_column(Boolean, default=False)
    enforcement_mode: Mapped[str] = mapped_column(String(16))
    model_allowlist: Mapped[list[str] | None] = mapped_column(JSON)  # restricts the scope, limits only these
    applies_to_models: Mapped[list[str] | None] = mapped_column(JSON)  # limits only these, restricts nothing
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))

    @property
    def limited_models(self) -> list[str] | None:
        """The models whose requests this quota's limits count (None: every model)."""
        return self.applies_to_models if self.applies_to_models is not None else self.model_allowlist


class RateCard(Base):
    """A rate card version is immutable once written; a change of prices is a new version."""

    __tablename__ = "rate_cards"
    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    content_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class RateCardEntry(Base):
    __tablename__ = "rate_card_entries"
    version: Mapped[str] = mapped_column(ForeignKey("rate_cards.version"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    unit: Mapped[str] = mapped_column(String(16))
    input: Mapped[Decimal]
    output: Mapped[Decimal]
    cache_read: Mapped[Decimal | None]
    cache_write: Mapped[Decimal | None]
    multiplier: Mapped[Decimal]
    max_output_tokens: Mapped[int | None] = mapped_column(BigInteger)


class Upstream(Managed, Base):
    __tablename__ = "upstreams"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    server: Mapped[str] = mapped_column(String(300))
    ssl_name: Mapped[str | None] = mapped_column(String(300))
    keepalive: Mapped[int | None] = mapped_column(Integer)
    tls: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16))


class Route(Managed, Base):
    __tablename__ = "routes"
    location: Mapped[str] = mapped_column(String(256), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    dialect: Mapped[str] = mapped_column(String(32))
    upstream: Mapped[str] = mapped_column(ForeignKey("upstreams.name"))
    auth_fail_closed: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16))


class ProviderCredential(Managed, Base):
    """`env` credentials name a variable read at use; `stored` ones are AES-GCM ciphertext."""

    __tablename__ = "provider_credentials"
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    env_var: Mapped[str | None] = mapped_column(String(200))
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_version: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))


class UsageEvent(Base):
    """One row per request (allowed or denied), keyed by request id so a replay never double-counts."""

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_org_started", "organization_id", "started_at"),
        Index("ix_usage_events_key_started", "key_id", "started_at"),
    )
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    organization_id: Mapped[str | None] = mapped_column(String(128))
    project_id: Mapped[str | None] = mapped_column(String(128))
    client_id: Mapped[str | None] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(32))
    api: Mapped[str | None] = mapped_column(String(64))
    model_requested: Mapped[str | None] = mapped_column(String(200))
    model_served: Mapped[str | None] = mapped_column(String(200))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))  # allowed | denied
    deny_reason: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_source: Mapped[str] = mapped_column(String(16))
    cost_input: Mapped[Decimal | None]
    cost_cached_input: Mapped[Decimal | None]
    cost_cache_write: Mapped[Decimal | None]
    cost_output: Mapped[Decimal | None]
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    unit: Mapped[str | None] = mapped_column(String(16))
    rate_card_version: Mapped[str | None] = mapped_column(String(128))
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    front_door: Mapped[str | None] = mapped_column(String(16))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class LedgerEntry(Base):
    """A per-organization hash chain: hash = SHA-256(prev_hash || canonical_bytes(entry))."""

    __tablename__ = "ledger_entries"
    __table_args__ = (UniqueConstraint("organization_id", "seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))  # usage | credit | sweep | admin | alert | ...
    ref: Mapped[str | None] = mapped_column(String(200), index=True)
    amount_nanos: Mapped[int] = mapped_column(BigInteger, default=0)  # + credit, - debit
    recorded_at: Mapped[datetime]
    body: Mapped[str] = mapped_column(Text)  # canonical JSON (RFC 8785) of the entry's content
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AdminAuditEvent(Base):
    __tablename__ = "admin_audit_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    organization_id: Mapped[str | None] = mapped_column(String(128), index=True)
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(300))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AdminToken(Base):
    """Admin API tokens (`<token_id>.<secret>`), hashed like gateway keys; global or scoped to one organization."""

    __tablename__ = "admin_tokens"
    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organizations.id"), index=True)  # None: global
    secret_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active | revoked
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """Replayed POSTs (same Idempotency-Key and actor) get the first response instead of a second effect."""

    __tablename__ = "idempotency_keys"
    actor: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class LedgerCheckpoint(Base):
    """A signed chain head: Ed25519 over the organization, sequence number and hash at a point in time."""

    __tablename__ = "ledger_checkpoints"
    __table_args__ = (Index("ix_ledger_checkpoints_org_seq", "organization_id", "seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(64))  # fingerprint of the signing public key
    signature: Mapped[str] = mapped_column(String(200))  # base64
    anchor: Mapped[str | None] = mapped_column(Text)  # where the sink wrote it


class AlertReceiver(Managed, Base):
    """A webhook alerts are delivered to; `url` and `signing_secret` may be `env:VAR` references."""

    __tablename__ = "alert_receivers"
    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # <organization id>:<name>
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    format: Mapped[str] = mapped_column(String(16))  # slack | json
    url: Mapped[str] = mapped_column(String(2000))
    signing_secret: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))


class AlertRule(Managed, Base):
    __tablename__ = "alert_rules"
    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # <organization id>:<rule id>
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    scope_type: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    receivers: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every receiver of the organization
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))


class AlertFiring(Base):
    """One crossed threshold per rule, subject and period: the unique key is what dedups across processes."""

    __tablename__ = "alert_firings"
    __table_args__ = (UniqueConstraint("rule_id", "subject", "threshold", "period"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128), index=True)
    rule_id: Mapped[str] = mapped_column(String(300))  # AlertRule.id
    subject: Mapped[str] = mapped_column(String(300))  # the quota measured, or ""
    threshold: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(32))
    fired_at: Mapped[datetime]
    delivered: Mapped[bool] = mapped_column(Boolean)  # False: a higher threshold crossed at once was sent instead
    message: Mapped[str] = mapped_column(Text)
    observed: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AlertDelivery(Base):
    """The outbox: one row per firing and receiver, claimed with a lease, retried with backoff."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_status_next", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    firing_id: Mapped[int] = mapped_column(ForeignKey("alert_firings.id"), index=True)
    receiver_id: Mapped[str] = mapped_column(String(300))  # AlertReceiver.id
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]


class PromptLog(Base):
    """Prompt and response content of a project that logs it, written off the request path, purged at expiry."""

    __tablename__ = "prompt_logs"
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128), index=True)
    project_id: Mapped[str] = mapped_column(String(128), index=True)
    mode: Mapped[str] = mapped_column(String(16))  # redacted | full
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    request_body: Mapped[str | None] = mapped_column(Text)
    response_text: Mapped[str | None] = mapped_column(Text)
    redactions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # rule -> matches replaced
