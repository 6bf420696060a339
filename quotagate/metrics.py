"""Prometheus metrics of one gateway process (each worker serves its own /metrics).

Label values come from bounded sets only: the API endpoint, the provider, a model the rate card prices,
a status code, a deny reason. A model name a client made up (refused as unknown) is labelled `unknown`,
so no client can create series at will.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from quotagate.metering.record import UsageRecord, UsageSink
from quotagate.models_catalog import split_model

REGISTRY = CollectorRegistry(auto_describe=True)
UNKNOWN_MODEL = "unknown"
NONE = "-"

REQUESTS = Counter(
    "quotagate_requests_total",
    "Requests by API endpoint (route), provider, model, status, decision and deny reason.",
    ["route", "provider", "model", "status", "decision", "reason", "front_door"],
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
SETTLE_DELTA = Counter(
    "quotagate_settle_delta_total",
    "Reserved minus actual at settlement, summed per direction: refund (the request used less than reserved) "
    "or top_up (it used more). Resource: tokens, or cost_nanos.",
    ["resource", "direction"],
    registry=REGISTRY,
)
SETTLE_RATIO = Histogram(
    "quotagate_settle_delta_ratio",
    "(reserved - actual) / reserved per settled request: 1 is all refunded, 0 exact, below 0 a top-up.",
    ["resource"],
    buckets=(-1.0, -0.5, -0.25, -0.1, -0.01, 0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0),
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
ADMITTED_WITHOUT_LIMITS = Counter(
    "quotagate_admitted_without_limits_total",
    "Requests a route with auth_fail_closed: false admitted while the counter backend was unavailable "
    "(no limit checked or reserved; their usage events carry the tag limits=unavailable).",
    registry=REGISTRY,
)
METERING_LOST = Counter(
    "quotagate_metering_streams_lost_total",
    "Responses whose metering stream Envoy gave up on before Quotagate could read it (the process is past its "
    "capacity): charged only as a sweep's estimate when the reservation expires.",
    registry=REGISTRY,
)
QUARANTINED = Counter(
    "quotagate_usage_quarantined_total",
    "Usage events the database refused even alone, set aside in the spool directory's quarantine file.",
    registry=REGISTRY,
)
SPOOLED = Gauge("quotagate_usage_spool_depth", "Usage events spooled and not yet written to SQL.", registry=REGISTRY)


def model_label(event: UsageRecord) -> str:
    """The model a request names, once the rate card knew it (the provider is set from then on)."""
    if event.model_served:
        return event.model_served
    if event.model_requested is None:
        return NONE
    if event.provider is None:  # refused before the model was found: the name is the client's own
        return UNKNOWN_MODEL
    return split_model(event.model_requested)[1]


class MetricsSink:
    """Counts every usage event on its way to the next sink."""

    def __init__(self, inner: UsageSink) -> None:
        self._inner = inner

    def record(self, event: UsageRecord) -> None:
        self._inner.record(event)
        provider, model = event.provider or NONE, model_label(event)
        REQUESTS.labels(
            event.api or NONE,
            provider,
            model,
            str(event.status),
            event.decision,
            event.deny_reason or "",
            event.front_door or NONE,
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
            COST.labels(provider, model, event.cost.unit or NONE).inc(event.cost.total_nanos)
        if event.reserved_tokens or event.reserved_nanos:  # a reservation was taken and is now settled
            _settled("tokens", event.reserved_tokens, u.total_tokens)
            _settled("cost_nanos", event.reserved_nanos, event.cost.total_nanos)
        if event.tags.get("monitor"):
            MONITORED.inc()
        if event.ttft_ms is not None:
            TTFT_SECONDS.observe(event.ttft_ms / 1000)
        if event.latency_ms is not None:
            TOTAL_SECONDS.observe(event.latency_ms / 1000)


def _settled(resource: str, reserved: int, actual: int) -> None:
    delta = reserved - actual
    if delta > 0:
        SETTLE_DELTA.labels(resource, "refund").inc(delta)
    elif delta < 0:
        SETTLE_DELTA.labels(resource, "top_up").inc(-delta)
    if reserved:
        SETTLE_RATIO.labels(resource).observe(delta / reserved)
