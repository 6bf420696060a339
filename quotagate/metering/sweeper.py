"""Reservations nobody settled (the process died mid-request) expire and are reconciled here.

If the request's usage event exists (its process recorded it, but the settle call failed), the
counters are settled with its real figures. Otherwise the reservation is released and a usage event
marks the request as swept with unknown usage (`estimated`, zero tokens): the response side never saw
the body, so there is nothing truthful to charge; the provider's own bill is the reconciliation source.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from quotagate.limits.model import Counters, ExpiredReservation, Settlement
from quotagate.metering.record import UsageRecord, UsageSink
from quotagate.usage.model import Usage, UsageSource

log = logging.getLogger(__name__)
# (tokens, charged nanos) of a recorded request, or None
FindRecorded = Callable[[str], tuple[int, int] | None]


class Sweeper:
    def __init__(
        self,
        *,
        counters: Counters,
        find_recorded: FindRecorded,
        sink: UsageSink,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._find = find_recorded
        self._sink = sink
        self._interval = interval_s
        self._clock = clock
        self.swept = 0

    async def sweep_once(self) -> int:
        expired = await self._counters.expired(self._clock())
        for reservation in expired:
            await self._reconcile(reservation)
        self.swept += len(expired)
        return len(expired)

    async def _reconcile(self, r: ExpiredReservation) -> None:
        recorded = await asyncio.to_thread(self._find, r.reservation_id)
        tokens, cost = recorded if recorded is not None else (0, 0)
        settled = await self._counters.settle(Settlement(r.reservation_id, r.org_id, tokens, cost))
        # Not settled here: its request finished meanwhile and its meter settled it; the meter's event is the record.
        if recorded is None and settled:
            log.warning("reservation %s expired unsettled; released and recorded as swept", r.reservation_id)
            now = self._clock()
            self._sink.record(
                UsageRecord(
                    request_id=r.reservation_id,
                    started_at=r.created_at,
                    finished_at=now,
                    status=0,
                    decision="allowed",
                    org_id=r.org_id,
                    usage=Usage(source=UsageSource.ESTIMATED),
                    reserved_tokens=r.tokens,
                    reserved_nanos=r.cost_nanos,
                    tags={"swept": "1"},
                    error="reservation expired unsettled: the process handling it stopped",
                )
            )

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception as exc:  # backend down: the next round retries
                log.warning("reservation sweep failed: %s", exc)
            await asyncio.sleep(self._interval)  # cancellation ends the loop (GatewayRuntime.stop awaits it)
