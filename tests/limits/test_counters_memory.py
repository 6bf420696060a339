"""What only the in-process backend has: memory bounded on its clock, the way Redis TTLs bound Redis."""

from __future__ import annotations

from quotagate.limits.model import LimitCheck, Settlement
from quotagate.store.counters_common import WINDOW_TTL_S, month_ttl_s
from quotagate.store.counters_memory import MemoryCounters
from tests.limits.conftest import MONTH, T0, FakeBaseline
from tests.limits.test_counters_contract import ORG, request
from tests.support.clock import Clock


async def test_old_windows_are_dropped_and_late_settlements_do_not_recreate_them() -> None:
    clock = Clock(1000.0)
    counters = MemoryCounters(FakeBaseline(), clock=clock)
    tpm = LimitCheck("k", tpm_limit=10_000)
    old = request(tpm, tokens=100, now=T0)
    assert (await counters.reserve(old)).allowed
    for minute in range(1, 50):  # fifty minutes of traffic, one request each
        clock.now += 60
        assert (await counters.reserve(request(tpm, tokens=1, now=T0 + 60 * minute))).allowed
    assert len(counters._minutes) <= WINDOW_TTL_S // 60 + 1  # what Redis would still hold
    assert await counters.settle(Settlement(old.reservation_id, ORG, 50, 0))  # its window is gone
    (found,) = await counters.state(ORG, (tpm,), T0, MONTH)
    assert found.tokens_this_minute == 0
    assert T0 // 60 not in counters._minutes


async def test_a_month_counter_is_dropped_after_the_month_and_reseeded_if_used_again() -> None:
    clock = Clock(1000.0)
    baseline = FakeBaseline(spend={"cap": 10})
    counters = MemoryCounters(baseline, clock=clock)
    cap = LimitCheck("cap", spend_limit_nanos=1000)
    assert (await counters.reserve(request(cap, cost=5))).allowed
    clock.now += month_ttl_s(MONTH, T0) - 60
    assert (await counters.reserve(request(cap, cost=5))).remaining[0].spend_remaining_nanos == 980
    clock.now += 120
    assert (await counters.reserve(request(cap, cost=5))).remaining[0].spend_remaining_nanos == 985  # re-seeded
    assert len(baseline.calls) == 2


async def test_pending_credits_are_forgotten_after_a_day() -> None:
    clock = Clock(1000.0)
    counters = MemoryCounters(FakeBaseline(), clock=clock)
    assert await counters.add_credits(ORG, "project:p", 50, 1) is None
    clock.now += 86_400 + 10
    await counters.reserve(request())  # any call lets the backend prune
    assert counters._pending == {}
