"""Alert rules: which thresholds a scope's figures have crossed, and in which dedup period.

Pure decisions over figures the store computed; the store records each (rule, subject, threshold,
period) at most once, which is what makes an alert fire once per threshold per period.

Periods: spend caps, the cap's calendar month (spend time zone); credit balance, the UTC day; TPM
saturation and spend anomalies, the UTC hour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from quotagate.money import format_units


class AlertKind(StrEnum):
    SPEND_CAP = "spend_cap"  # % of a monthly spend cap of the scope
    CREDIT_BALANCE = "credit_balance"  # prepaid balance below an amount
    TPM_SATURATION = "tpm_saturation"  # % of a tokens-per-minute limit used in a minute window
    SPEND_ANOMALY = "spend_anomaly"  # spend rate far above its trailing average


class AlertFormat(StrEnum):
    SLACK = "slack"  # {"text": ...}: Slack incoming webhooks and compatible chat tools
    JSON = "json"  # the generic event body, HMAC-signed


@dataclass(frozen=True, slots=True)
class RuleView:
    id: str  # "<org id>:<rule id>", the stored identity
    org_id: str
    rule_id: str
    kind: AlertKind
    scope_type: str
    scope_id: str
    params: dict[str, Any]
    receivers: tuple[str, ...]  # empty: every receiver of the organization


@dataclass(frozen=True, slots=True)
class Candidate:
    """A threshold crossed now; recorded (and delivered) unless already recorded for its period."""

    subject: str  # the quota a figure belongs to ("" when the rule has one figure)
    threshold: str
    period: str
    message: str
    observed: dict[str, Any] = field(default_factory=dict)
    rank: int = 0  # among one subject's crossed thresholds only the highest rank is delivered


@dataclass(frozen=True, slots=True)
class LimitFigure:
    subject: str  # quota id
    used: int  # nanos spent, or tokens in the minute window
    limit: int
    unit: str | None = None


def _money(nanos: int) -> str:
    return format_units(nanos, 4)  # messages are for people; observed figures keep the exact nanos


def month_period(now: datetime) -> str:
    return now.strftime("%Y-%m")


def day_period(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def hour_period(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H")


def percent_crossed(
    rule: RuleView, label: str, figures: list[LimitFigure], period: str, *, tokens: bool
) -> list[Candidate]:
    """Spend caps and TPM saturation: every threshold at or below used/limit, per limiting quota."""
    out: list[Candidate] = []
    for fig in figures:
        if fig.limit <= 0:
            continue
        for pct in rule.params.get("thresholds", []):
            if fig.used * 100 >= fig.limit * pct:
                if tokens:
                    what = f"{fig.used} of {fig.limit} tokens per minute"
                else:
                    what = f"{_money(fig.used)} of {_money(fig.limit)} {fig.unit or ''}".rstrip()
                kind = "tokens-per-minute limit" if tokens else "monthly spend cap"
                out.append(
                    Candidate(
                        subject=fig.subject,
                        threshold=f"{pct}%",
                        period=period,
                        message=f"{label} reached {pct}% of its {kind}: {what} ({period})",
                        observed={"used": fig.used, "limit": fig.limit, "unit": fig.unit, "percent": pct},
                        rank=pct,
                    )
                )
    return out


def credit_below(rule: RuleView, label: str, balance: int, has_credits: bool, now: float) -> list[Candidate]:
    below = int(rule.params["below_nanos"])
    if not has_credits or balance >= below:
        return []
    period = day_period(now)
    return [
        Candidate(
            subject="",
            threshold=f"below:{below}",
            period=period,
            message=f"{label}: prepaid credit balance {_money(balance)} is below {_money(below)}",
            observed={"balance_nanos": balance, "below_nanos": below},
        )
    ]


def spend_anomaly(rule: RuleView, label: str, recent: int, baseline: int, now: float) -> list[Candidate]:
    """Fires when the spend of the last `window_minutes` is at least `min_spend` and more than `factor`
    times the average spend per window of the `baseline_days` before it."""
    p = rule.params
    window, days = int(p["window_minutes"]), int(p["baseline_days"])
    factor, minimum = Decimal(p["factor"]), int(p["min_spend_nanos"])
    average = Decimal(baseline) * window / (days * 1440)
    if recent < minimum or Decimal(recent) <= factor * average:
        return []
    return [
        Candidate(
            subject="",
            threshold="anomaly",
            period=hour_period(now),
            message=(
                f"{label}: spend of the last {window} min ({_money(recent)}) is over {factor}x "
                f"its {days}-day average per {window} min ({_money(int(average))})"
            ),
            observed={"recent_nanos": recent, "average_nanos": int(average), "factor": str(factor)},
        )
    ]
