"""The alert evaluator of a gateway process: measure every active rule, record new firings, deliver webhooks.

Every process may run one. The database is the authority: a firing is recorded once per (rule, subject,
threshold, period) whichever process sees it first, and each delivery is claimed with a lease before it
is sent, so several evaluators send each alert once. A failed delivery is retried with exponential
backoff (`retry_base_s` * 2^attempt, at most an hour apart) up to `max_attempts`, then marked failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from quotagate.governance.alert_rules import (
    AlertFormat,
    AlertKind,
    Candidate,
    RuleView,
    credit_below,
    hour_period,
    month_period,
    percent_crossed,
    spend_anomaly,
)
from quotagate.governance.webhooks import json_body, post, slack_body
from quotagate.settings import Settings
from quotagate.store.alerts_repo import (
    DeliveryJob,
    active_rules,
    claim_delivery,
    due_deliveries,
    finish_delivery,
    record_firings,
    scope_label,
    spend_between,
    spend_figures,
    tpm_figures,
)
from quotagate.store.baseline import StoreBaseline
from quotagate.store.database import Database

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 3600.0


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def resolve_ref(value: str | None, environ: Mapping[str, str]) -> str | None:
    """`env:VAR` -> the variable's value (None if unset); anything else as written."""
    if value is None or not value.startswith("env:"):
        return value
    return environ.get(value[4:]) or None


def render(format_: str, event: dict[str, Any]) -> bytes:
    return slack_body(event) if format_ == AlertFormat.SLACK.value else json_body(event)


def sample_event(org_id: str, org_slug: str | None, now: float) -> dict[str, Any]:
    """What `quotagate alerts test` sends: a real event's shape, marked `"test": true`."""
    return {
        "type": "quotagate.alert",
        "id": "test",
        "test": True,
        "organization": {"id": org_id, "slug": org_slug},
        "rule": {"id": "sample-spend-cap", "kind": AlertKind.SPEND_CAP.value},
        "scope": {"type": "organization", "id": org_id, "name": org_slug or org_id},
        "subject": "",
        "threshold": "80%",
        "period": month_period(_dt(now)),
        "observed": {"used": 80_000_000_000, "limit": 100_000_000_000, "unit": "usd", "percent": 80},
        "message": f"Test alert: organization {org_slug or org_id} reached 80% of its monthly spend cap",
        "fired_at": _dt(now).isoformat(),
    }


class AlertEvaluator:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        interval_s: float | None = None,
        retry_base_s: float = 10.0,
        max_attempts: int = 8,
        lease_s: float = 60.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] = os.environ,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._db = db
        self._zone = ZoneInfo(settings.spend_timezone)
        self._baseline = StoreBaseline(db, settings.spend_timezone)
        self._interval = settings.alert_interval_s if interval_s is None else interval_s
        self._retry_base = retry_base_s
        self._max_attempts = max_attempts
        self._lease = lease_s
        self._timeout = timeout_s
        self._clock = clock
        self._environ = environ
        self._transport = transport

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception as exc:  # database down: the next round retries
                log.warning("alert evaluation failed: %s", exc)
            await asyncio.sleep(self._interval)

    def tick(self) -> tuple[int, int]:
        """One round: (firings recorded for delivery, deliveries sent)."""
        return self.evaluate_once(), self.deliver_due()

    # -- evaluation
    def evaluate_once(self) -> int:
        now = self._clock()
        with self._db.read() as session:
            rules = active_rules(session)
        fired = 0
        for rule in rules:
            try:
                candidates = self._candidates(rule, now)
                if candidates:
                    with self._db.transaction() as session:
                        fired += len(record_firings(session, rule, candidates, _dt(now)))
            except Exception:  # one broken rule must not stop the others
                log.exception("alert rule %s could not be evaluated", rule.id)
        return fired

    def _candidates(self, rule: RuleView, now: float) -> list[Candidate]:
        if rule.kind is AlertKind.CREDIT_BALANCE:
            month = datetime.fromtimestamp(now, self._zone).strftime("%Y-%m")
            credit_id = f"{rule.scope_type}:{rule.scope_id}"
            base = self._baseline.read(rule.org_id, [], [credit_id], month)
            with self._db.read() as session:
                label = scope_label(session, rule.scope_type, rule.scope_id)
            has_credits = base.credit_watermark.get(credit_id, 0) > 0
            return credit_below(rule, label, base.credit_nanos.get(credit_id, 0), has_credits, now)
        with self._db.read() as session:
            label = scope_label(session, rule.scope_type, rule.scope_id)
            if rule.kind is AlertKind.SPEND_CAP:
                local = datetime.fromtimestamp(now, self._zone)
                start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
                end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
                figures = spend_figures(session, rule, start, end)
                return percent_crossed(rule, label, figures, month_period(local), tokens=False)
            if rule.kind is AlertKind.TPM_SATURATION:
                # The last complete one-minute window (the counters' windows are fixed UTC minutes).
                end_s = now // 60 * 60
                figures = tpm_figures(session, rule, _dt(end_s - 60), _dt(end_s))
                return percent_crossed(rule, label, figures, hour_period(end_s - 60), tokens=True)
            window_s = int(rule.params["window_minutes"]) * 60
            baseline_s = int(rule.params["baseline_days"]) * 86400
            recent = spend_between(session, rule, _dt(now - window_s), _dt(now))
            baseline = spend_between(session, rule, _dt(now - window_s - baseline_s), _dt(now - window_s))
            return spend_anomaly(rule, label, recent, baseline, now)

    # -- delivery
    def deliver_due(self) -> int:
        now = self._clock()
        with self._db.read() as session:
            due = due_deliveries(session, _dt(now))
        sent = 0
        for delivery_id in due:
            with self._db.transaction() as session:
                job = claim_delivery(session, delivery_id, _dt(now), _dt(now + self._lease))
            if job is None:
                continue
            error = self._send(job)
            if error is not None:
                log.warning("alert delivery %s failed (attempt %d): %s", delivery_id, job.attempts + 1, error)
            retry_at = None
            if error is not None and job.attempts + 1 < self._max_attempts:
                retry_at = _dt(self._clock() + min(self._retry_base * 2**job.attempts, MAX_BACKOFF_S))
            with self._db.transaction() as session:
                finish_delivery(session, delivery_id, error=error, now=_dt(self._clock()), retry_at=retry_at)
            sent += error is None
        return sent

    def _send(self, job: DeliveryJob) -> str | None:
        url = resolve_ref(job.url, self._environ)
        if url is None:
            return f"the receiver URL variable {job.url[4:]} is not set"
        secret = resolve_ref(job.signing_secret, self._environ)
        if job.signing_secret and secret is None:  # never send unsigned what is meant to be signed
            return f"the signing secret variable {job.signing_secret[4:]} is not set"
        with httpx.Client(timeout=self._timeout, transport=self._transport) as client:
            return post(
                client,
                url,
                render(job.format, job.event),
                secret=secret,
                delivery_id=str(job.delivery_id),
                now=self._clock(),
            )
