"""A response still being metered keeps its reservation from the sweeper, however long it runs.

Real Meter, real in-process counters and sweeper, on one injected clock; `beat_once` is the keep-alive task's step.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace
from decimal import Decimal

from quotagate.apis import Api, Provider
from quotagate.gateway.config import ConfigCache
from quotagate.gateway.ticket import Ticket
from quotagate.limits.model import Baseline, LimitCheck, ReservationRequest
from quotagate.metering.keepalive import OpenReservations
from quotagate.metering.meter import Meter, MeterServices
from quotagate.metering.sweep_note import SweepNote
from quotagate.metering.sweeper import Sweeper
from quotagate.snapshot import Price, Snapshot
from quotagate.store.counters_memory import MemoryCounters
from tests.metering.test_meter import ListSink
from tests.metering.test_meter import ticket as meter_ticket
from tests.support.clock import Clock

T0 = 1_800_000_000.0
TTL = 60
MONTH = "2027-01"
CAP = LimitCheck("cap", spend_limit_nanos=10**12)
PRICE = Price(Provider.OPENAI, "gpt-4o", "usd", Decimal("2.50"), Decimal("10.00"), None, None, Decimal(1), "v1")
REPLY = b'{"model":"gpt-4o","usage":{"prompt_tokens":100,"completion_tokens":50}}'
REAL_NANOS = 100 * 2500 + 50 * 10_000  # 2.50 and 10.00 per 1M tokens


class NoBaseline:
    async def baseline(self, org_id: str, spend_ids: list[str], credit_ids: list[str], month: str) -> Baseline:
        return Baseline()


def ticket(rid: str) -> Ticket:
    streamed = meter_ticket(Provider.OPENAI, Api.OPENAI_CHAT, "gpt-4o", stream=True, prompt_estimate=100)
    return replace(
        streamed, request_id=rid, reservation_id=rid, started_at=T0, reserved_tokens=1000, reserved_nanos=10**7
    )


async def setup() -> tuple[Clock, MemoryCounters, OpenReservations, MeterServices, Sweeper, ListSink]:
    clock = Clock(T0)
    counters = MemoryCounters(NoBaseline(), clock=clock)
    keepalive = OpenReservations(counters, TTL, clock=clock)
    sink = ListSink()
    snap = Snapshot(version=1, prices={(Provider.OPENAI, "gpt-4o"): PRICE})
    config = ConfigCache(lambda: snap, lambda: 1)
    services = MeterServices(config=config, counters=counters, sink=sink, clock=clock, open_reservations=keepalive)
    sweeper = Sweeper(counters=counters, find_recorded=lambda rid: None, sink=sink, config=config, clock=clock)
    note = SweepNote("p", "c", "k", "openai", "chat", "gpt-4o", "gpt-4o", True, 100).encode()
    for rid in ("long", "short"):
        booked = ReservationRequest("o", rid, (CAP,), 1000, 10**7, T0, MONTH, TTL, note=note)
        assert (await counters.reserve(booked)).allowed
    return clock, counters, keepalive, services, sweeper, sink


async def spent(counters: MemoryCounters) -> int:
    (state,) = await counters.state("o", (CAP,), T0, MONTH)
    return state.spend_this_month_nanos


async def test_a_stream_ten_times_longer_than_the_ttl_is_never_swept_and_billed_in_full() -> None:
    clock, counters, keepalive, services, sweeper, sink = await setup()
    meter = Meter(ticket("long"), services)
    meter.response_headers(200, "application/json")
    assert len(keepalive) == 1
    for _ in range(10 * 4):  # ten TTLs, a beat every interval, a sweep after every beat
        clock.now += keepalive.interval_s
        assert await keepalive.beat_once() == 1
        await sweeper.sweep_once()
        assert [e.request_id for e in sink.events] == (["short"] if clock.now >= T0 + TTL else [])
    meter.chunk(REPLY)
    record = await meter.finish()
    assert record.cost.total_nanos == REAL_NANOS and not record.swept
    assert [e.request_id for e in sink.events] == ["short", "long"]  # "short" had no meter: swept once
    assert sink.events[0].swept
    assert await spent(counters) == REAL_NANOS + sink.events[0].cost.total_nanos  # each charged once, exactly
    assert len(keepalive) == 0  # finished meters are not kept alive
    assert await keepalive.beat_once() == 0
    assert keepalive.lost == 0


async def test_without_the_keepalive_the_stream_is_swept_and_its_real_figures_still_win() -> None:
    clock, counters, keepalive, services, sweeper, sink = await setup()
    meter = Meter(ticket("long"), services)
    meter.response_headers(200, "application/json")
    clock.now = T0 + TTL + 1  # no beat ran (the counters were unreachable, say)
    assert await sweeper.sweep_once() == 2
    assert await keepalive.beat_once() == 0 and keepalive.lost == 1  # it notices, and says so
    meter.chunk(REPLY)
    await meter.finish()
    swept = {e.request_id: e.cost.total_nanos for e in sink.events if e.swept}
    assert set(swept) == {"long", "short"}
    assert swept["long"] == 100 * 2500  # the prompt estimate at the input rate
    assert await spent(counters) == REAL_NANOS + swept["short"]  # "long": the real figures replaced the estimate


async def test_a_meter_dropped_without_finishing_stops_keeping_its_reservation() -> None:
    clock, _, keepalive, services, sweeper, _ = await setup()
    meter = Meter(ticket("long"), services)
    assert len(keepalive) == 1
    del meter
    gc.collect()
    assert len(keepalive) == 0  # held weakly: a front-door bug cannot pin a reservation forever
    clock.now = T0 + TTL + 1
    assert await sweeper.sweep_once() == 2


async def test_a_meter_opened_late_extends_at_once() -> None:
    clock, counters, _, services, _, _ = await setup()
    clock.now = T0 + TTL - 1  # the first byte came just before the expiry, before the next beat
    meter = Meter(ticket("long"), services)
    for _ in range(3):
        await asyncio.sleep(0)  # the extension runs as its own task
    clock.now = T0 + TTL + 1
    assert [e.reservation_id for e in await counters.expired(clock.now)] == ["short"]
    await meter.finish()
