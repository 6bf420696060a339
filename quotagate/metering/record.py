"""A usage event as the core produces it: one per request, allowed or denied."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from quotagate.usage.model import ZERO_USAGE, Usage, UsageSource


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    input: Decimal = Decimal(0)
    cached_input: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    total_nanos: int = 0
    unit: str | None = None
    rate_card_version: str | None = None


NO_COST = CostBreakdown()
SWEPT_TAG = "swept"  # tags["swept"] == "1": a sweeper's event (see UsageRecord.swept)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    started_at: float
    status: int
    decision: str  # allowed | denied
    finished_at: float | None = None
    ttft_ms: int | None = None
    latency_ms: int | None = None
    org_id: str | None = None
    project_id: str | None = None
    client_id: str | None = None
    key_id: str | None = None
    provider: str | None = None
    api: str | None = None
    model_requested: str | None = None
    model_served: str | None = None
    stream: bool = False
    deny_reason: str | None = None
    usage: Usage = ZERO_USAGE
    cost: CostBreakdown = NO_COST
    reserved_tokens: int = 0
    reserved_nanos: int = 0
    front_door: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    remaining_requests: int | None = None  # tightest RPM headroom after admission (access log)
    remaining_tokens: int | None = None  # tightest TPM headroom after admission (access log)

    @property
    def swept(self) -> bool:
        """Recorded by the sweeper: nobody saw the response, its figures are an estimate the real ones replace."""
        return self.tags.get(SWEPT_TAG) == "1"

    def to_json(self) -> dict[str, Any]:
        u, c = self.usage, self.cost
        return {
            "request_id": self.request_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "ttft_ms": self.ttft_ms,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "decision": self.decision,
            "org_id": self.org_id,
            "project_id": self.project_id,
            "client_id": self.client_id,
            "key_id": self.key_id,
            "provider": self.provider,
            "api": self.api,
            "model_requested": self.model_requested,
            "model_served": self.model_served,
            "stream": self.stream,
            "deny_reason": self.deny_reason,
            "usage": {
                "input_tokens": u.input_tokens,
                "cached_input_tokens": u.cached_input_tokens,
                "cache_write_tokens": u.cache_write_tokens,
                "output_tokens": u.output_tokens,
                "reasoning_tokens": u.reasoning_tokens,
                "source": u.source.value,
            },
            "cost": {
                "input": str(c.input),
                "cached_input": str(c.cached_input),
                "cache_write": str(c.cache_write),
                "output": str(c.output),
                "total_nanos": c.total_nanos,
                "unit": c.unit,
                "rate_card_version": c.rate_card_version,
            },
            "reserved_tokens": self.reserved_tokens,
            "reserved_nanos": self.reserved_nanos,
            "front_door": self.front_door,
            "tags": dict(self.tags),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UsageRecord:
        u, c = d["usage"], d["cost"]
        return cls(
            request_id=d["request_id"],
            started_at=d["started_at"],
            finished_at=d.get("finished_at"),
            ttft_ms=d.get("ttft_ms"),
            latency_ms=d.get("latency_ms"),
            status=d["status"],
            decision=d["decision"],
            org_id=d.get("org_id"),
            project_id=d.get("project_id"),
            client_id=d.get("client_id"),
            key_id=d.get("key_id"),
            provider=d.get("provider"),
            api=d.get("api"),
            model_requested=d.get("model_requested"),
            model_served=d.get("model_served"),
            stream=bool(d.get("stream")),
            deny_reason=d.get("deny_reason"),
            usage=Usage(
                input_tokens=u["input_tokens"],
                cached_input_tokens=u["cached_input_tokens"],
                cache_write_tokens=u["cache_write_tokens"],
                output_tokens=u["output_tokens"],
                reasoning_tokens=u["reasoning_tokens"],
                source=UsageSource(u["source"]),
            ),
            cost=CostBreakdown(
                input=Decimal(c["input"]),
                cached_input=Decimal(c["cached_input"]),
                cache_write=Decimal(c["cache_write"]),
                output=Decimal(c["output"]),
                total_nanos=int(c["total_nanos"]),
                unit=c.get("unit"),
                rate_card_version=c.get("rate_card_version"),
            ),
            reserved_tokens=int(d.get("reserved_tokens", 0)),
            reserved_nanos=int(d.get("reserved_nanos", 0)),
            front_door=d.get("front_door"),
            tags=dict(d.get("tags") or {}),
            error=d.get("error"),
        )


class UsageSink(Protocol):
    """Where usage events go: appended durably before the response finishes, written to SQL in batches."""

    def record(self, event: UsageRecord) -> None:
        """Durably append (never raises for a full or slow database; it buffers)."""
        ...
