"""What the tightest limits leave after a request, for the flow's comment in mitmweb."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from addons.quotagate_report import money
from quotagate.gateway.ticket import Ticket
from quotagate.identity.authenticate import Identity
from quotagate.policy import limit_checks, quotas_for
from quotagate.runtime import GatewayRuntime


async def budget_left(runtime: GatewayRuntime, ticket: Ticket, client_headers: Iterable[tuple[str, str]]) -> list[str]:
    """Requests and tokens left this minute (the x-ratelimit-* headers admission returned), then spend left
    this month and prepaid credits, read from the counters after settlement."""
    rates = dict(client_headers)
    left = [
        f"{rates[f'x-ratelimit-remaining-{what}']} {what}/min"
        for what in ("requests", "tokens")
        if f"x-ratelimit-remaining-{what}" in rates
    ]
    snap = runtime.config.snapshot
    try:
        identity = Identity(
            key=snap.keys[ticket.key_id],
            client=snap.clients[ticket.client_id],
            project=snap.projects[ticket.project_id],
            org=snap.orgs[ticket.org_id],
        )
    except KeyError:  # the configuration changed since admission
        return left
    quotas = tuple(
        q
        for q in quotas_for(snap, identity)
        if q.enforce and q.applies_to(ticket.model) and (q.monthly_spend_nanos is not None or q.prepaid)
    )
    checks = limit_checks(quotas, ticket.model)  # one per quota, same order
    if not checks:
        return left
    now = time.time()
    month = datetime.fromtimestamp(now, ZoneInfo(runtime.settings.spend_timezone)).strftime("%Y-%m")
    states = await runtime.counters.state(ticket.org_id, checks, now, month)
    spend = [
        (check.spend_limit_nanos - state.spend_this_month_nanos, quota.unit)
        for quota, check, state in zip(quotas, checks, states, strict=True)
        if check.spend_limit_nanos is not None
    ]
    credits = [
        (state.credit_balance_nanos, quota.unit)
        for quota, state in zip(quotas, states, strict=True)
        if state.credit_balance_nanos is not None
    ]
    if spend:
        nanos, unit = min(spend, key=lambda s: s[0])
        left.append(f"{money(max(nanos, 0), unit)} this month")
    if credits:
        nanos, unit = min(credits, key=lambda c: c[0])
        left.append(f"{money(nanos, unit)} credits")
    return left
