"""One JSON access-log line per request, with the fields of seed 003's `log_format` (plus a few more)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from quotagate.metering.record import UsageRecord, UsageSink
from quotagate.money import format_units

log = logging.getLogger("quotagate.access")


def access_line(e: UsageRecord) -> dict[str, object]:
    c = e.cost
    rate_limited = (
        e.deny_reason
        if e.deny_reason and (e.deny_reason.startswith("rate_limit") or e.deny_reason == "insufficient_quota")
        else ""
    )
    return {
        "time": datetime.fromtimestamp(e.started_at, UTC).isoformat(timespec="milliseconds"),
        "request_id": e.request_id,
        "org": e.org_id or "",
        "project": e.project_id or "",
        "client": e.client_id or "",
        "gateway_key_id": e.key_id or "",
        "provider": e.provider or "",
        "model": e.model_served or e.model_requested or "",
        "rate_limit_reason": rate_limited,
        "request_remaining": "" if e.remaining_requests is None else str(e.remaining_requests),
        "token_remaining": "" if e.remaining_tokens is None else str(e.remaining_tokens),
        "input_cost": format_units_exact(c.input + c.cached_input + c.cache_write),
        "output_cost": format_units_exact(c.output),
        "total_cost": format_units(c.total_nanos),
        "cost_status": e.usage.source.value if e.decision == "allowed" else "denied",
        "status": str(e.status),
        "request_time": f"{(e.latency_ms or 0) / 1000:.3f}",
        "deny_reason": e.deny_reason or "",
        "tokens_in": e.usage.prompt_tokens,
        "tokens_out": e.usage.output_tokens,
    }


def format_units_exact(value: object) -> str:
    return format(value, "f")


class AccessLogSink:
    """Logs the line, then hands the event on. Logging failures never stop an event."""

    def __init__(self, inner: UsageSink) -> None:
        self._inner = inner

    def record(self, event: UsageRecord) -> None:
        self._inner.record(event)
        if log.isEnabledFor(logging.INFO):
            try:
                log.info(orjson.dumps(access_line(event)).decode())
            except Exception:  # a bad field must not lose the event
                log.debug("access line failed for %s", event.request_id, exc_info=True)
