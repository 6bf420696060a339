"""Reservations nobody settled (the process died mid-request) expire and are reconciled here.

Open meters keep extending their reservations (``metering/keepalive.py``), so what expires belongs to a process
that stopped, or to a meter that could not reach the counters for a while. For each claimed reservation:

* **Recorded**: the request's usage event exists (in SQL or still in a spool: its process recorded it and died
  before settling). The counters are settled with its real figures; no new event.
* **Not recorded**: nobody saw the response. The request was forwarded, so the provider almost certainly billed
  its prompt; what it generated is unknown. The sweep charges the admission's prompt estimate at the input rate
  (capped at the reserved worst case), marked ``estimated`` and ``swept``, and records that as the request's event
  (a ``sweep`` ledger entry). The counters are settled *provisionally*: if the real event turns up after all (a
  stream that ran on while its meter could not extend, a spool found later), its figures replace the estimate in
  the counters (``Counters.settle``) and in the event and ledger (``store/usage_writer.py``).

The swept event is recorded before the counters are settled: a crash in between leaves the worst case counted
(over, never under) and the event kept, never settled counters without an event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from quotagate.apis import Provider
from quotagate.gateway.config import ConfigCache
from quotagate.limits.model import Counters, ExpiredReservation, Settlement
from quotagate.metering.record import NO_COST, SWEPT_TAG, CostBreakdown, UsageRecord, UsageSink
from quotagate.metering.sweep_note import SweepNote
from quotagate.money import units
from quotagate.pricing import cost_of
from quotagate.usage.model import Usage, UsageSource

log = logging.getLogger(__name__)
# (tokens, charged nanos) of a recorded (not swept) request, or None; may raise when the store is unreachable
FindRecorded = Callable[[str], tuple[int, int] | None]
SWEPT_ERROR = "reservation expired unsettled: the process handling it stopped"
MAX_UNSETTLED = 10_000  # failed settlements kept for retry (each is idempotent; see retry_later)


class Sweeper:
    def __init__(
        self,
        *,
        counters: Counters,
        find_recorded: FindRecorded,
        sink: UsageSink,
        config: ConfigCache,  # prices the prompt estimate
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._find = find_recorded
        self._sink = sink
        self._config = config
        self._interval = interval_s
        self._clock = clock
        self._unsettled: list[Settlement] = []  # claimed, recorded, but the settle failed: retried next round
        self.swept = 0

    async def sweep_once(self) -> int:
        await self._retry_unsettled()
        expired = await self._counters.expired(self._clock())
        for reservation in expired:
            await self._reconcile(reservation)
        self.swept += len(expired)
        return len(expired)

    async def _reconcile(self, r: ExpiredReservation) -> None:
        try:
            recorded = await asyncio.to_thread(self._find, r.reservation_id)
        except Exception as exc:  # the claim is taken: charge the estimate, the real event corrects it if it lands
            log.warning("looking up %s failed (%s); sweeping it as unseen", r.reservation_id, exc)
            recorded = None
        if recorded is not None:
            tokens, cost = recorded
            await self._settle(Settlement(r.reservation_id, r.org_id, tokens, cost))
            return
        log.warning(
            "reservation %s expired unsettled; charged its prompt estimate and recorded as swept", r.reservation_id
        )
        record = self.swept_record(r)
        self._sink.record(record)  # durable first (see the module docstring)
        settlement = Settlement(
            r.reservation_id, r.org_id, record.usage.total_tokens, record.cost.total_nanos, provisional=True
        )
        await self._settle(settlement)

    def swept_record(self, r: ExpiredReservation) -> UsageRecord:
        """The event of a request whose response nobody saw: its prompt estimate, priced, marked swept."""
        now = self._clock()
        unseen = UsageRecord(
            request_id=r.reservation_id,
            started_at=r.created_at,
            finished_at=now,
            latency_ms=max(int((now - r.created_at) * 1000), 0),
            status=0,  # no response was seen
            decision="allowed",
            org_id=r.org_id,
            usage=Usage(source=UsageSource.ESTIMATED),
            reserved_tokens=r.tokens,
            reserved_nanos=r.cost_nanos,
            tags={SWEPT_TAG: "1"},
            error=SWEPT_ERROR,
        )
        note = SweepNote.decode(r.note)
        if note is None:  # nothing is known about the request (a reservation without a note): charge nothing
            return unseen
        usage = Usage(input_tokens=note.prompt_tokens, source=UsageSource.ESTIMATED)
        return replace(
            unseen,
            project_id=note.project_id,
            client_id=note.client_id,
            key_id=note.key_id,
            provider=note.provider,
            api=note.api,
            model_requested=note.model_requested,
            model_served=note.model,
            stream=note.stream,
            usage=usage,
            cost=self._price(note, usage, r.cost_nanos),
            front_door=note.front_door or None,
            tags={**note.tags, SWEPT_TAG: "1"},
        )

    def _price(self, note: SweepNote, usage: Usage, reserved_nanos: int) -> CostBreakdown:
        try:
            price = self._config.snapshot.prices.get((Provider(note.provider), note.model))
        except ValueError:  # a provider this version does not know
            price = None
        if price is None:
            return NO_COST
        c = cost_of(usage, price)
        capped = c.total_nanos > reserved_nanos  # rates rose since admission: never beyond the reserved worst case
        return CostBreakdown(
            input=units(reserved_nanos) if capped else c.input,
            total_nanos=reserved_nanos if capped else c.total_nanos,
            unit=c.unit,
            rate_card_version=c.rate_card_version,
        )

    async def resettle(self, settlements: Sequence[Settlement]) -> None:
        """Real figures that met a sweep's estimate in the usage store: make sure the counters hold them (a no-op
        when the request's own meter already did, see ``Counters.settle``)."""
        for settlement in settlements:
            await self._settle(settlement)

    @property
    def retrying(self) -> int:
        """Settlements that failed and wait for the next round."""
        return len(self._unsettled)

    def retry_later(self, settlement: Settlement) -> None:
        """A settlement that failed elsewhere (a meter's): retried on the next round. Past the bound, the oldest
        are dropped: each still holds its reservation, which expires and is reconciled from its recorded event."""
        self._unsettled.append(settlement)
        if len(self._unsettled) > MAX_UNSETTLED:
            dropped = len(self._unsettled) - MAX_UNSETTLED
            del self._unsettled[:dropped]
            log.warning("%d failed settlements left to their reservations' expiry (retry list full)", dropped)

    async def _settle(self, settlement: Settlement) -> None:
        if not await self._settled(settlement):
            self.retry_later(settlement)

    async def _settled(self, settlement: Settlement) -> bool:
        try:
            await self._counters.settle(settlement)
        except Exception as exc:
            log.warning("settling reservation %s failed (%s); retrying", settlement.reservation_id, exc)
            return False
        return True

    async def _retry_unsettled(self) -> None:
        pending, self._unsettled = self._unsettled, []
        for i, settlement in enumerate(pending):
            if not await self._settled(settlement):  # the backend is still away: keep the rest for next round
                self._unsettled[:0] = pending[i:]
                return

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception as exc:  # backend down: the next round retries
                log.warning("reservation sweep failed: %s", exc)
            await asyncio.sleep(self._interval)  # cancellation ends the loop (GatewayRuntime.stop awaits it)
