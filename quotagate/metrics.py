"""Prometheus metrics of one gateway process (each worker serves its own /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from quotagate.metering.record import UsageRecord, UsageSink

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "quotagate_requests_total",
    "Requests by outcome.",
    ["provider", "model", "status", "decision", "reason", "front_door"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "quotagate_tokens_total", "Metered tokens by class.", ["provider", "model", "class"], registry=REGISTRY
)
COST = Counter(
    "quotagate_cost_nanos_total",
    "Charged cost in nanos of the rate unit.",
    ["provider", "model", "unit"],
    registry=REGISTRY,
)
MONITORED = Counter(
    "quotagate_monitor_exceeded_total", "Requests a monitor-mode quota would have refused.", registry=REGISTRY
)
SETTLE_DELTA = Histogram(
    "quotagate_settle_refund_ratio",
    "Share of the reserved worst case refunded at settlement.",
    buckets=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0),
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "quotagate_decision_seconds",
    "Time to decide a Check.",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
    registry=REGISTRY,
)
TTFT_SECONDS = Histogram(
    "quotagate_ttft_seconds",
    "Time from admission to the first response byte.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
TOTAL_SECONDS = Histogram(
    "quotagate_request_seconds",
    "Time from admission to the end of the response.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
BACKEND_ERRORS = Counter("quotagate_backend_errors_total", "Backend failures by origin.", ["origin"], registry=REGISTRY)
SPOOLED = Gauge("quotagate_usage_spool_depth", "Usage events spooled and not yet written to SQL.", registry=REGISTRY)


class MetricsSink:
    """Counts every usage event on its way to the next sink."""

    def __init__(self, inner: UsageSink) -> None:
        self._inner = inner

    def record(self, event: UsageRecord) -> None:
        self._inner.record(event)
        provider, model = event.provider or "-", event.model_served or event.model_requested or "-"
        REQUESTS.labels(
            provider, model, str(event.status), event.decision, event.deny_reason or "", event.front_door or "-"
        ).inc()
        if event.decision != "allowed":
            return
        u = event.usage
        for cls, n in (
            ("input", u.input_tokens),
            ("cached_input", u.cached_input_tokens),
            ("cache_write", u.cache_write_tokens),
            ("output", u.output_tokens),
            ("reasoning", u.reasoning_tokens),
        ):
            if n:
                TOKENS.labels(provider, model, cls).inc(n)
        if event.cost.total_nanos:
            COST.labels(provider, model, event.cost.unit or "-").inc(event.cost.total_nanos)
        if event.reserved_nanos:
            SETTLE_DELTA.observe(max(0.0, 1 - event.cost.total_nanos / event.reserved_nanos))
        if event.tags.get("monitor"):
            MONITORED.inc()
        if event.ttft_ms is not None:
            TTFT_SECONDS.observe(event.ttft_ms / 1000)
        if event.latency_ms is not None:
            TOTAL_SECONDS.observe(event.latency_ms / 1000)
