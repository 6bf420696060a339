"""One JSON access-log line per request, with the fields of seed 003's `log_format` (plus a few more).

Swept requests (their process died) get a line too, from the process that swept them. `configure_access_log`
gives the `quotagate.access` logger a stream of its own that carries the bare JSON object, one per line, so the
access log can be parsed line by line however the process's other logging is formatted.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

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
        # When the request ended, like nginx's $time_iso8601 (written when the request is logged).
        "time": datetime.fromtimestamp(e.finished_at or e.started_at, UTC).isoformat(timespec="milliseconds"),
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


def configure_access_log(path: Path | None = None) -> logging.Handler:
    """Send access lines, bare (no time, level or logger prefix), to `path` (appended) or standard error, and
    nowhere else. On at INFO whatever the process's log level: the access log is a record, not diagnostics."""
    handler: logging.Handler
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")  # append mode: several workers may share the file
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


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
