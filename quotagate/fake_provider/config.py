"""Server-wide settings of the fake provider."""

from __future__ import annotations

from dataclasses import dataclass, field

from quotagate.fake_provider.behaviour import Behaviour

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-5-nano",
    "text-embedding-3-small",
    "babbage-002",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
)


@dataclass(frozen=True, slots=True)
class FakeConfig:
    defaults: Behaviour = field(default_factory=Behaviour)  # per-request headers override these
    record_limit: int = 100  # requests kept for GET /_fake/requests; 0 turns recording off
    api_keys: frozenset[str] = frozenset()  # accepted credentials; empty accepts any (or none)
    models: tuple[str, ...] = DEFAULT_MODELS  # what GET /v1/models lists (any model is served)
