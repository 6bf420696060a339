"""One request's response side: feed the body as it passes, then price, settle and record once.

Shared by every front door (Envoy ext_proc, the mitmproxy stream callable). `chunk` runs on the
streaming path, so it only hands bytes to the incremental parser and never raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from quotagate.gateway.config import ConfigCache
from quotagate.gateway.ticket import Ticket
from quotagate.governance.content import ContentSink
from quotagate.limits.model import Admission, Counters, Settlement
from quotagate.metering.keepalive import OpenReservations
from quotagate.metering.record import NO_COST, CostBreakdown, UsageRecord, UsageSink
from quotagate.policy import limit_checks, quotas_of
from quotagate.pricing import cost_of
from quotagate.tokens import count_tokens
from quotagate.usage.factory import is_event_stream, parser_for
from quotagate.usage.model import ZERO_USAGE, Usage, UsageSource
from quotagate.usage.parser import ParseResult, UsageParser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeterServices:
    config: ConfigCache
    counters: Counters
    sink: UsageSink
    clock: Callable[[], float] = time.time
    content: ContentSink | None = None  # logged prompts: gets the response text (per project policy)
    spend_timezone: str = "UTC"  # whose calendar month a request's spend counts in (Settings.spend_timezone)
    open_reservations: OpenReservations | None = None  # keeps an open meter's reservation from being swept
    # Takes a settlement that failed (backend slow or down) to retry it within seconds rather than at expiry.
    settle_later: Callable[[Settlement], None] | None = None


class Meter:
    def __init__(self, ticket: Ticket, services: MeterServices) -> None:
        self.ticket = ticket
        self._services = services
        self._status = 0
        self._parser: UsageParser | None = None
        self._first_byte_at: float | None = None
        self._finished: UsageRecord | None = None
        if services.open_reservations is not None and ticket.reservation_id:
            services.open_reservations.add(ticket.org_id, ticket.reservation_id, ticket.started_at, self)

    def response_headers(self, status: int, content_type: str | None) -> None:
        self._status = status
        self._parser = parser_for(self.ticket.api, streaming=is_event_stream(content_type))

    def chunk(self, data: bytes) -> None:
        if not data:
            return
        if self._first_byte_at is None:
            self._first_byte_at = self._services.clock()
        try:
            if self._parser is None:  # body without headers seen: assume a JSON body
                self._parser = parser_for(self.ticket.api, streaming=False)
            self._parser.feed(data)
        except Exception:  # parsers never raise; this guards the stream against a bug all the same
            log.exception("usage parser failed on request %s", self.ticket.request_id)

    @property
    def finished(self) -> bool:
        return self._finished is not None

    async def finish(self, *, error: str | None = None) -> UsageRecord:
        """Price what happened, record the event durably, then settle the reservation. Idempotent; never raises.

        Recording comes first: a process killed between the two leaves a spooled event and an unsettled
        reservation, which the sweeper settles with the event's figures. (The other order would leave settled
        counters and no event at all.)

        `error` says the exchange ended abnormally (client disconnect, upstream reset); a stream that
        ended without its terminal event is charged for what was generated, marked `estimated`."""
        if self._finished is not None:
            return self._finished
        now = self._services.clock()
        t = self.ticket
        result = self._parser.finish() if self._parser is not None else None
        usage, problem = self._usage(result, error)
        price = self._services.config.snapshot.prices.get((t.provider, t.model))
        cost = NO_COST
        if price is not None and usage.total_tokens:
            c = cost_of(usage, price)
            cost = CostBreakdown(
                c.input, c.cached_input, c.cache_write, c.output, c.total_nanos, c.unit, c.rate_card_version
            )
        elif price is not None:
            cost = CostBreakdown(unit=price.unit, rate_card_version=price.version)
        record = UsageRecord(
            request_id=t.request_id,
            started_at=t.started_at,
            finished_at=now,
            ttft_ms=_ms(t.started_at, self._first_byte_at),
            latency_ms=_ms(t.started_at, now),
            status=self._status or 502,
            decision="allowed",
            org_id=t.org_id,
            project_id=t.project_id,
            client_id=t.client_id,
            key_id=t.key_id,
            provider=t.provider.value,
            api=t.api.value,
            model_requested=t.model_requested,
            model_served=(result.served_model if result else None) or t.model,
            stream=t.stream,
            usage=usage,
            cost=cost,
            reserved_tokens=t.reserved_tokens,
            reserved_nanos=t.reserved_nanos,
            front_door=t.front_door,
            tags={**t.tags, **({"monitor": ",".join(t.monitored)} if t.monitored else {})},
            error=problem,
            remaining_requests=t.remaining_requests,
            remaining_tokens=t.remaining_tokens,
        )
        self._finished = record
        if self._services.content is not None:
            self._services.content.response(t, (result.output_text or result.error or "") if result else "")
        try:
            self._services.sink.record(record)
        except Exception:
            log.exception("usage event %s could not be spooled", t.request_id)
        if self._services.open_reservations is not None and t.reservation_id:
            self._services.open_reservations.discard(t.org_id, t.reservation_id)
        await self._settle(record)
        return record

    def _usage(self, result: ParseResult | None, error: str | None) -> tuple[Usage, str | None]:
        if result is None:
            return ZERO_USAGE, error or "no response"
        problem = error or result.error
        if self._status >= 400:
            # The provider billed what it reported, usually nothing.
            return (result.usage or ZERO_USAGE), problem or f"upstream status {self._status}"
        if result.complete and error is None and result.usage is not None:
            return result.usage, problem
        return self._estimate(result), problem or ("stream ended early" if self.ticket.stream else "incomplete body")

    def _estimate(self, result: ParseResult) -> Usage:
        """A cut or abandoned response: what the provider reported so far, the rest counted from the text."""
        text = result.output_text
        counted = count_tokens(text) if text else 0
        if text and result.output_text_chars > len(text):  # the kept text was capped: scale up
            counted = -(-counted * result.output_text_chars // len(text))
        reported = result.usage
        if reported is None:
            return Usage(input_tokens=self.ticket.prompt_estimate, output_tokens=counted, source=UsageSource.ESTIMATED)
        return replace(reported, output_tokens=max(reported.output_tokens, counted), source=UsageSource.ESTIMATED)

    async def _settle(self, record: UsageRecord) -> None:
        t = self.ticket
        if not t.reservation_id:
            return
        settlement = Settlement(
            t.reservation_id, t.org_id, record.usage.total_tokens, record.cost.total_nanos, self._admission()
        )
        try:
            await self._services.counters.settle(settlement)
        except Exception as exc:  # retried later; metering never blocks traffic
            log.warning("settling %s failed (%s); retrying it from the sweeper", t.reservation_id, exc)
            if self._services.settle_later is not None:
                # Without the admission: if the reservation is gone by then, the attempt that timed out settled
                # it, or Redis restarted and re-seeds from the recorded event; counting it again would be twice.
                self._services.settle_later(replace(settlement, admission=None))

    def _admission(self) -> Admission | None:
        """Where the request was counted, so the settlement still lands if the backend lost the reservation."""
        t = self.ticket
        quotas = quotas_of(self._services.config.snapshot, t.org_id, t.project_id, t.client_id, t.key_id)
        checks = limit_checks(quotas, t.model)
        if not checks:
            return None
        month = datetime.fromtimestamp(t.started_at, ZoneInfo(self._services.spend_timezone)).strftime("%Y-%m")
        return Admission(checks, t.started_at, month)


def _ms(start: float, end: float | None) -> int | None:
    return None if end is None else max(int((end - start) * 1000), 0)
