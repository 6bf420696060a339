"""The counter contract: every backend (in-process, Redis) must pass every test here, unchanged."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from quotagate.limits.model import (
    Counters,
    CounterState,
    Denial,
    LimitCheck,
    LimitKind,
    Remaining,
    ReservationRequest,
    Settlement,
)
from tests.limits.conftest import MONTH, T0, Backend, FakeBaseline

ORG = "acme"


def request(
    *checks: LimitCheck,
    tokens: int = 0,
    cost: int = 0,
    now: float = T0,
    month: str = MONTH,
    ttl: int = 600,
    org: str = ORG,
    rid: str | None = None,
) -> ReservationRequest:
    return ReservationRequest(org, rid or uuid.uuid4().hex, checks, tokens, cost, now, month, ttl)


async def state_of(counters: Counters, check: LimitCheck, now: float = T0, month: str = MONTH) -> CounterState:
    (found,) = await counters.state(ORG, (check,), now, month)
    return found


# --- requests and tokens per minute ---------------------------------------------------------------


async def test_rpm_admits_up_to_the_limit_then_refuses_until_the_next_window(counters: Counters) -> None:
    rpm = LimitCheck("k1", rpm_limit=3)
    for left in (2, 1, 0):
        decision = await counters.reserve(request(rpm, now=T0 + 10))
        assert decision.allowed
        assert decision.remaining == (Remaining("k1", rpm_limit=3, rpm_remaining=left),)
    refused = await counters.reserve(request(rpm, now=T0 + 59.5))
    assert not refused.allowed
    assert refused.denial == Denial("k1", LimitKind.RPM, 3, 0, 1, True)
    assert refused.window_reset_s == 1
    assert (await state_of(counters, rpm)).requests_this_minute == 3  # the refusal was not counted
    nxt = await counters.reserve(request(rpm, now=T0 + 60))
    assert nxt.allowed and nxt.remaining[0].rpm_remaining == 2
    assert (await state_of(counters, rpm, now=T0 + 60)).requests_this_minute == 1


@pytest.mark.parametrize(
    ("offset", "expected"), [(0.0, 60), (0.001, 60), (14.8, 46), (45.2, 15), (59.0, 1), (59.999, 1)]
)
async def test_retry_after_is_whole_seconds_to_the_next_window(
    counters: Counters, offset: float, expected: int
) -> None:
    rpm = LimitCheck("k1", rpm_limit=0)
    decision = await counters.reserve(request(rpm, now=T0 + offset))
    assert decision.denial is not None
    assert decision.denial.retry_after_s == expected
    assert decision.window_reset_s == expected


async def test_tpm_counts_estimates_and_settlement_corrects_the_admission_window(counters: Counters) -> None:
    tpm = LimitCheck("k1", tpm_limit=1000)
    first = request(tpm, tokens=600, now=T0 + 5)
    assert (await counters.reserve(first)).remaining[0].tpm_remaining == 400
    refused = await counters.reserve(request(tpm, tokens=500, now=T0 + 6))
    assert refused.denial == Denial("k1", LimitKind.TPM, 1000, 400, 54, True)
    assert await counters.settle(Settlement(first.reservation_id, ORG, 200, 0))
    assert (await state_of(counters, tpm)).tokens_this_minute == 200
    fits = await counters.reserve(request(tpm, tokens=800, now=T0 + 7))  # 200 + 800 == limit
    assert fits.allowed and fits.remaining[0].tpm_remaining == 0
    assert not (await counters.reserve(request(tpm, tokens=1, now=T0 + 8))).allowed
    assert (await counters.reserve(request(tpm, tokens=1000, now=T0 + 60))).allowed  # a fresh window


async def test_a_request_larger_than_the_tpm_limit_is_refused_even_in_an_empty_window(counters: Counters) -> None:
    decision = await counters.reserve(request(LimitCheck("k1", tpm_limit=100), tokens=101))
    assert decision.denial == Denial("k1", LimitKind.TPM, 100, 100, 60, True)


async def test_settling_in_a_later_window_corrects_the_window_of_admission(counters: Counters) -> None:
    tpm = LimitCheck("k1", tpm_limit=1000)
    early = request(tpm, tokens=700, now=T0 + 50)
    assert (await counters.reserve(early)).allowed
    assert (await counters.reserve(request(tpm, tokens=100, now=T0 + 70))).allowed  # next window
    assert await counters.settle(Settlement(early.reservation_id, ORG, 300, 0))
    assert (await state_of(counters, tpm, now=T0 + 50)).tokens_this_minute == 300
    assert (await state_of(counters, tpm, now=T0 + 70)).tokens_this_minute == 100


# --- all or nothing, monitor checks -----------------------------------------------------------------


async def test_one_enforced_refusal_leaves_every_counter_unchanged(counters: Counters, baseline: FakeBaseline) -> None:
    baseline.spend["cap"] = 900
    baseline.credits["project:p"] = 10_000
    rates = LimitCheck("rates", rpm_limit=10, tpm_limit=10_000)
    cap = LimitCheck("cap", spend_limit_nanos=1000)
    prepaid = LimitCheck("pre", prepaid=True, credit_id="project:p")
    watch = LimitCheck("watch", enforce=False, rpm_limit=100, spend_limit_nanos=10**9)
    checks = (rates, cap, prepaid, watch)
    before = await counters.state(ORG, checks, T0, MONTH)
    decision = await counters.reserve(request(*checks, tokens=50, cost=200))
    assert not decision.allowed
    assert decision.denial == Denial("cap", LimitKind.SPEND, 1000, 100, None, True)
    assert await counters.state(ORG, checks, T0, MONTH) == before
    assert decision.remaining == (
        Remaining("rates", rpm_limit=10, rpm_remaining=10, tpm_limit=10_000, tpm_remaining=10_000),
        Remaining("cap", spend_remaining_nanos=100),
        Remaining("pre", credit_balance_nanos=10_000),
        Remaining("watch", rpm_limit=100, rpm_remaining=100, spend_remaining_nanos=10**9),
    )
    # Nothing was reserved either: there is nothing to settle.
    assert await counters.expired(T0 + 10**6) == []


async def test_the_denial_is_the_first_enforced_refusal_in_check_order(counters: Counters) -> None:
    a = LimitCheck("a", tpm_limit=10)
    b = LimitCheck("b", rpm_limit=0)
    decision = await counters.reserve(request(a, b, tokens=11))
    assert decision.denial is not None and decision.denial.counter_id == "a"
    assert decision.denial.kind == LimitKind.TPM
    assert decision.monitored == ()


async def test_monitor_checks_never_deny_but_count_and_are_reported(counters: Counters, baseline: FakeBaseline) -> None:
    baseline.credits["org:acme"] = 100
    watch = LimitCheck(
        "watch", enforce=False, rpm_limit=1, tpm_limit=10, spend_limit_nanos=50, prepaid=True, credit_id="org:acme"
    )
    assert (await counters.reserve(request(watch, tokens=10, cost=50))).monitored == ()
    over = await counters.reserve(request(watch, tokens=10, cost=60))
    assert over.allowed and over.denial is None
    assert over.monitored == (
        Denial("watch", LimitKind.RPM, 1, 0, 60, False),
        Denial("watch", LimitKind.TPM, 10, 0, 60, False),
        Denial("watch", LimitKind.SPEND, 50, 0, None, False),
        Denial("watch", LimitKind.CREDITS, 50, 50, None, False),
    )
    assert await state_of(counters, watch) == CounterState("watch", 2, 20, 110, -10)
    assert over.remaining == (Remaining("watch", 1, 0, 10, 0, 0, -10),)


async def test_monitor_refusals_are_reported_when_an_enforced_check_denies(counters: Counters) -> None:
    watch = LimitCheck("watch", enforce=False, rpm_limit=0)
    hard = LimitCheck("hard", tpm_limit=5)
    decision = await counters.reserve(request(watch, hard, tokens=6))
    assert not decision.allowed
    assert decision.monitored == (Denial("watch", LimitKind.RPM, 0, 0, 60, False),)
    assert (await state_of(counters, watch)).requests_this_minute == 0


# --- monthly spend ------------------------------------------------------------------------------------


async def test_spend_cap_reserves_the_worst_case_then_settles_refunds_and_top_ups(counters: Counters) -> None:
    cap = LimitCheck("cap", spend_limit_nanos=1000)
    first = request(cap, cost=600)
    assert (await counters.reserve(first)).remaining[0].spend_remaining_nanos == 400
    second = await counters.reserve(request(cap, cost=600))
    assert second.denial == Denial("cap", LimitKind.SPEND, 1000, 400, None, True)
    assert await counters.settle(Settlement(first.reservation_id, ORG, 10, 100))  # refund 500
    assert (await state_of(counters, cap)).spend_this_month_nanos == 100
    third = request(cap, cost=600)
    assert (await counters.reserve(third)).allowed  # 700
    assert await counters.settle(Settlement(third.reservation_id, ORG, 10, 900))  # top-up 300
    assert (await state_of(counters, cap)).spend_this_month_nanos == 1000
    assert not (await counters.reserve(request(cap, cost=1))).allowed
    assert (await counters.reserve(request(cap, cost=0))).allowed  # a free request still fits


async def test_each_month_has_its_own_spend_counter(counters: Counters, baseline: FakeBaseline) -> None:
    cap = LimitCheck("cap", spend_limit_nanos=1000)
    assert (await counters.reserve(request(cap, cost=1000))).allowed
    assert not (await counters.reserve(request(cap, cost=1))).allowed
    assert (await counters.reserve(request(cap, cost=1000, month="2027-02", now=T0 + 31 * 86400))).allowed
    assert [call[3] for call in baseline.calls] == [MONTH, "2027-02"]


async def test_spend_and_credits_are_seeded_from_the_baseline_once(counters: Counters, baseline: FakeBaseline) -> None:
    baseline.spend["cap"] = 900
    baseline.credits["project:p"] = 500
    cap = LimitCheck("cap", spend_limit_nanos=1000)
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    first = await counters.reserve(request(cap, pre, cost=100))
    assert first.allowed
    assert first.remaining[0].spend_remaining_nanos == 0 and first.remaining[1].credit_balance_nanos == 400
    assert baseline.calls == [(ORG, ("cap",), ("project:p",), MONTH)]
    baseline.spend["cap"] = 0  # the durable store moved on; the counters are already seeded
    assert not (await counters.reserve(request(cap, pre, cost=1))).allowed
    assert await counters.state(ORG, (cap, pre), T0, MONTH) == [
        CounterState("cap", spend_this_month_nanos=1000),
        CounterState("pre", credit_balance_nanos=400),
    ]
    assert len(baseline.calls) == 1


async def test_state_seeds_what_it_reports(counters: Counters, baseline: FakeBaseline) -> None:
    baseline.spend["cap"] = 123
    baseline.credits["project:p"] = 456
    cap = LimitCheck("cap", spend_limit_nanos=1000, rpm_limit=5, tpm_limit=50)
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    plain = LimitCheck("plain", rpm_limit=1)
    assert await counters.state(ORG, (cap, pre, plain), T0, MONTH) == [
        CounterState("cap", 0, 0, 123, None),
        CounterState("pre", 0, 0, 0, 456),
        CounterState("plain", 0, 0, 0, None),
    ]
    assert (await counters.reserve(request(cap, pre, plain, tokens=7, cost=10))).allowed
    assert await counters.state(ORG, (cap, pre, plain), T0 + 30, MONTH) == [
        CounterState("cap", 1, 7, 133, None),
        CounterState("pre", 0, 0, 0, 446),
        CounterState("plain", 1, 0, 0, None),
    ]
    assert len(baseline.calls) == 1


async def test_only_the_limits_a_check_has_are_counted(counters: Counters) -> None:
    rpm_only = LimitCheck("r", rpm_limit=10)
    assert (await counters.reserve(request(rpm_only, tokens=99, cost=99))).allowed
    assert await state_of(counters, LimitCheck("r", rpm_limit=10, tpm_limit=10**6)) == CounterState("r", 1, 0)


# --- prepaid credits ------------------------------------------------------------------------------------


async def test_credits_pay_the_worst_case_and_settlement_gives_back_the_rest(
    counters: Counters, baseline: FakeBaseline
) -> None:
    baseline.credits["project:p"] = 1000
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    first = request(pre, cost=700)
    assert (await counters.reserve(first)).remaining[0].credit_balance_nanos == 300
    refused = await counters.reserve(request(pre, cost=301))
    assert refused.denial == Denial("pre", LimitKind.CREDITS, 300, 300, None, True)
    assert await counters.settle(Settlement(first.reservation_id, ORG, 0, 200))
    assert (await state_of(counters, pre)).credit_balance_nanos == 800
    exact = request(pre, cost=800)
    assert (await counters.reserve(exact)).remaining[0].credit_balance_nanos == 0  # balance == cost is enough
    assert await counters.settle(Settlement(exact.reservation_id, ORG, 0, 900))  # the provider charged more
    assert (await state_of(counters, pre)).credit_balance_nanos == -100
    owing = await counters.reserve(request(pre, cost=0))  # even a free request waits for the debt to be paid
    assert owing.denial == Denial("pre", LimitKind.CREDITS, 0, 0, None, True)
    assert owing.remaining == (Remaining("pre", credit_balance_nanos=-100),)


async def test_checks_paying_from_one_balance_charge_it_once(counters: Counters, baseline: FakeBaseline) -> None:
    baseline.credits["project:p"] = 1000
    a = LimitCheck("a", prepaid=True, credit_id="project:p", rpm_limit=5)
    b = LimitCheck("b", prepaid=True, credit_id="project:p")
    booked = request(a, b, cost=400)
    decision = await counters.reserve(booked)
    assert [r.credit_balance_nanos for r in decision.remaining] == [600, 600]
    assert await counters.settle(Settlement(booked.reservation_id, ORG, 0, 100))
    assert (await state_of(counters, b)).credit_balance_nanos == 900
    assert baseline.calls == [(ORG, (), ("project:p",), MONTH)]


async def test_add_credits_follows_the_watermark(counters: Counters, baseline: FakeBaseline) -> None:
    baseline.credits["project:p"] = 1000
    baseline.marks["project:p"] = 7  # the seed includes every credit up to ledger sequence 7
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    assert (await state_of(counters, pre)).credit_balance_nanos == 1000
    assert await counters.add_credits(ORG, "project:p", 500, 7) == 1000  # already in the seed
    assert await counters.add_credits(ORG, "project:p", 500, 5) == 1000  # older still
    assert await counters.add_credits(ORG, "project:p", 500, 8) == 1500
    assert await counters.add_credits(ORG, "project:p", 500, 8) == 1500  # applied once
    assert await counters.add_credits(ORG, "project:p", -200, 9) == 1300  # a removal
    assert (await state_of(counters, pre)).credit_balance_nanos == 1300


async def test_add_credits_before_the_seed_returns_none_and_the_seed_reads_the_ledger(
    counters: Counters, baseline: FakeBaseline
) -> None:
    # The credit is committed to the ledger (seq 3) before the counter exists: the seed reads it from there.
    assert await counters.add_credits(ORG, "project:p", 500, 3) is None
    baseline.credits["project:p"] = 500
    baseline.marks["project:p"] = 3
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    assert (await state_of(counters, pre)).credit_balance_nanos == 500  # not 1000: counted once


async def test_a_credit_committed_while_a_seed_is_in_flight_is_not_lost(
    counters: Counters, baseline: FakeBaseline
) -> None:
    # The seed reads the ledger (balance 100, watermark 2); then credit 3 is committed and add_credits runs
    # before the seed is written (it finds no counter and returns None); then the seed is written.
    baseline.credits["project:p"] = 100
    baseline.marks["project:p"] = 2
    returned: list[int | None] = []

    async def credit_lands() -> None:
        returned.append(await counters.add_credits(ORG, "project:p", 50, 3))

    baseline.during = credit_lands
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    assert (await state_of(counters, pre)).credit_balance_nanos == 150
    assert returned == [None]
    assert await counters.add_credits(ORG, "project:p", 50, 3) == 150  # still counted once


async def test_a_seed_that_already_includes_a_credit_ignores_its_late_add(
    counters: Counters, baseline: FakeBaseline
) -> None:
    # The reverse race: the seed read the ledger after credit 3 was committed; add_credits(3) comes later.
    baseline.credits["project:p"] = 150
    baseline.marks["project:p"] = 3
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    assert (await counters.reserve(request(pre, cost=50))).allowed
    assert await counters.add_credits(ORG, "project:p", 50, 3) == 100
    assert (await state_of(counters, pre)).credit_balance_nanos == 100


# --- settlement and expiry ----------------------------------------------------------------------------------


async def test_settle_is_idempotent(counters: Counters) -> None:
    cap = LimitCheck("cap", spend_limit_nanos=1000, tpm_limit=100)
    booked = request(cap, tokens=50, cost=500)
    assert (await counters.reserve(booked)).allowed
    assert await counters.settle(Settlement(booked.reservation_id, ORG, 10, 100)) is True
    assert await counters.settle(Settlement(booked.reservation_id, ORG, 10, 100)) is False
    assert await counters.settle(Settlement("never-reserved", ORG, 10, 100)) is False
    assert await counters.settle(Settlement(booked.reservation_id, "another-org", 10, 100)) is False
    assert await state_of(counters, cap) == CounterState("cap", 0, 10, 100)


async def test_expired_claims_each_due_reservation_once(counters: Counters) -> None:
    cap = LimitCheck("cap", spend_limit_nanos=10**6)
    soon = [request(cap, tokens=i, cost=10 * i, ttl=60, now=T0 + i) for i in range(1, 6)]
    later = request(cap, tokens=1, cost=1, ttl=600)
    settled = request(cap, tokens=1, cost=1, ttl=60)
    for booked in (*soon, later, settled):
        assert (await counters.reserve(booked)).allowed
    assert await counters.settle(Settlement(settled.reservation_id, ORG, 0, 0))
    assert await counters.expired(T0 + 59) == []
    first = await counters.expired(T0 + 63, limit=2)  # due by now: T0+61, T0+62, T0+63
    second = await counters.expired(T0 + 63)
    assert [e.reservation_id for e in first] == [soon[0].reservation_id, soon[1].reservation_id]
    assert [e.reservation_id for e in second] == [soon[2].reservation_id]
    rest = await counters.expired(T0 + 1000)
    assert {e.reservation_id for e in rest} == {soon[3].reservation_id, soon[4].reservation_id, later.reservation_id}
    assert len(rest) == 3
    assert await counters.expired(T0 + 10**6) == []
    e = first[0]
    assert (e.org_id, e.tokens, e.cost_nanos, e.created_at) == (ORG, 1, 10, T0 + 1)
    # Until the sweeper settles a claimed reservation, its worst case stays counted and its id taken.
    assert (await state_of(counters, cap)).spend_this_month_nanos == 10 + 20 + 30 + 40 + 50 + 1
    with pytest.raises(ValueError, match="already outstanding"):
        await counters.reserve(request(cap, rid=soon[0].reservation_id))
    # The sweeper settles what it claimed (recorded figures, or 0 to release), once.
    assert await counters.settle(Settlement(soon[0].reservation_id, ORG, 1, 4)) is True
    assert await counters.settle(Settlement(soon[0].reservation_id, ORG, 1, 4)) is False
    assert await counters.settle(Settlement(soon[1].reservation_id, ORG, 0, 0)) is True
    assert (await state_of(counters, cap)).spend_this_month_nanos == 4 + 0 + 30 + 40 + 50 + 1
    assert await counters.expired(T0 + 10**6) == []  # settled or not, never claimed twice


async def test_concurrent_sweepers_claim_each_reservation_exactly_once(backend: Backend) -> None:
    first, second = backend.new(), backend.new()
    rpm = LimitCheck("r", rpm_limit=10**6)
    booked = [request(rpm, ttl=10, org=f"org{i % 3}") for i in range(60)]
    for item in booked:
        assert (await first.reserve(item)).allowed

    async def sweep(counters: Counters) -> list[str]:
        claimed: list[str] = []
        while batch := await counters.expired(T0 + 11, limit=7):
            claimed += [e.reservation_id for e in batch]
            await asyncio.sleep(0)
        return claimed

    a, b = await asyncio.gather(sweep(first), sweep(second))
    assert len(a) + len(b) == 60
    assert set(a) | set(b) == {item.reservation_id for item in booked}


async def test_an_open_meter_extends_its_reservation_past_the_sweep(counters: Counters) -> None:
    cap = LimitCheck("cap", spend_limit_nanos=10**6)
    noted = ReservationRequest(ORG, "long-stream", (cap,), 5, 50, T0, MONTH, 60, note='{"prompt": 7}')
    assert (await counters.reserve(noted)).allowed
    assert await counters.extend(ORG, "long-stream", T0 + 300) is True
    assert await counters.expired(T0 + 61) == []  # due at T0+60, but still being metered
    assert await counters.extend(ORG, "long-stream", T0 + 100) is True  # never earlier
    assert await counters.expired(T0 + 299) == []
    (claimed,) = await counters.expired(T0 + 301)
    assert (claimed.reservation_id, claimed.tokens, claimed.cost_nanos) == ("long-stream", 5, 50)
    assert claimed.note == '{"prompt": 7}'  # the note comes back to the sweeper unchanged
    assert await counters.extend(ORG, "long-stream", T0 + 900) is False  # claimed: too late
    assert await counters.expired(T0 + 10**6) == []
    assert await counters.extend(ORG, "never-reserved", T0 + 900) is False
    assert await counters.extend("another-org", "long-stream", T0 + 900) is False
    settled = request(cap, ttl=60)
    assert (await counters.reserve(settled)).allowed
    assert await counters.settle(Settlement(settled.reservation_id, ORG, 0, 0))
    assert await counters.extend(ORG, settled.reservation_id, T0 + 900) is False  # settled: nothing to keep alive
    assert await counters.expired(T0 + 10**6) == []


async def test_a_reservation_without_a_note_is_claimed_with_an_empty_one(counters: Counters) -> None:
    booked = request(LimitCheck("r", rpm_limit=10), ttl=10)
    assert (await counters.reserve(booked)).allowed
    (claimed,) = await counters.expired(T0 + 11)
    assert claimed.note == ""


async def test_a_provisional_sweep_is_corrected_once_by_the_real_figures(
    counters: Counters, baseline: FakeBaseline
) -> None:
    baseline.credits["project:p"] = 10_000
    cap = LimitCheck("cap", spend_limit_nanos=10**6, tpm_limit=10**6)
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    booked = request(cap, pre, tokens=100, cost=1000, ttl=10)
    assert (await counters.reserve(booked)).allowed
    rid = booked.reservation_id
    (claimed,) = await counters.expired(T0 + 11)
    assert claimed.reservation_id == rid
    # The sweeper saw no response: it charges its estimate (the prompt), provisionally.
    assert await counters.settle(Settlement(rid, ORG, 10, 100, provisional=True)) is True
    assert await counters.state(ORG, (cap, pre), T0, MONTH) == [
        CounterState("cap", 0, 10, 100),
        CounterState("pre", credit_balance_nanos=10_000 - 100),
    ]
    assert await counters.settle(Settlement(rid, ORG, 99, 999, provisional=True)) is False  # one estimate only
    # The stream was still running: its real figures arrive and win, topping the counters up once.
    assert await counters.settle(Settlement(rid, ORG, 40, 700)) is True
    assert await counters.settle(Settlement(rid, ORG, 40, 700)) is False
    assert await counters.settle(Settlement(rid, ORG, 1, 1, provisional=True)) is False
    assert await counters.state(ORG, (cap, pre), T0, MONTH) == [
        CounterState("cap", 0, 40, 700),
        CounterState("pre", credit_balance_nanos=10_000 - 700),
    ]
    assert await counters.expired(T0 + 10**6) == []


async def test_a_provisional_settlement_after_the_real_one_changes_nothing(counters: Counters) -> None:
    cap = LimitCheck("cap", spend_limit_nanos=10**6)
    booked = request(cap, tokens=100, cost=1000, ttl=10)
    assert (await counters.reserve(booked)).allowed
    assert len(await counters.expired(T0 + 11)) == 1
    assert await counters.settle(Settlement(booked.reservation_id, ORG, 5, 50)) is True  # the meter was first
    assert await counters.settle(Settlement(booked.reservation_id, ORG, 1, 1, provisional=True)) is False
    assert (await state_of(counters, cap)).spend_this_month_nanos == 50


async def test_a_reservation_id_is_used_once_while_outstanding(counters: Counters) -> None:
    rpm = LimitCheck("r", rpm_limit=10)
    assert (await counters.reserve(request(rpm, rid="same"))).allowed
    with pytest.raises(ValueError, match="already outstanding"):
        await counters.reserve(request(rpm, rid="same"))
    assert (await state_of(counters, rpm)).requests_this_minute == 1
    assert await counters.settle(Settlement("same", ORG, 0, 0))
    assert (await counters.reserve(request(rpm, rid="same"))).allowed


async def test_a_reservation_without_checks_is_still_settled_once(counters: Counters) -> None:
    booked = request(tokens=5, cost=5)
    decision = await counters.reserve(booked)
    assert decision.allowed and decision.remaining == ()
    assert await counters.settle(Settlement(booked.reservation_id, ORG, 1, 1))
    assert not await counters.settle(Settlement(booked.reservation_id, ORG, 1, 1))


@pytest.mark.parametrize(
    "bad",
    [
        request(LimitCheck("a"), tokens=-1),
        request(LimitCheck("a"), cost=2**53),
        request(LimitCheck("a"), ttl=0),
        request(LimitCheck("a", rpm_limit=1), LimitCheck("a", tpm_limit=1)),
        request(LimitCheck("a", prepaid=True)),
        request(LimitCheck("a", spend_limit_nanos=-5)),
        request(LimitCheck("a", rpm_limit=5), month="2027-13"),
    ],
)
async def test_bad_requests_are_refused_and_change_nothing(counters: Counters, bad: ReservationRequest) -> None:
    with pytest.raises(ValueError):
        await counters.reserve(bad)
    assert await counters.expired(T0 + 10**6) == []


async def test_bad_settlements_and_credits_are_refused(counters: Counters) -> None:
    with pytest.raises(ValueError):
        await counters.settle(Settlement("x", ORG, -1, 0))
    with pytest.raises(ValueError):
        await counters.add_credits(ORG, "project:p", 5, 0)
    with pytest.raises(ValueError):
        await counters.add_credits(ORG, "project:p", 2**53, 1)


# --- concurrency ----------------------------------------------------------------------------------------------


async def test_concurrent_reserves_never_exceed_a_hard_cap(backend: Backend, baseline: FakeBaseline) -> None:
    admitted_max = 37
    baseline.spend["cap"] = 5  # the cap fits exactly 37 requests of 25 on top of what was already spent
    cap = LimitCheck("cap", spend_limit_nanos=5 + admitted_max * 25)
    clients = [backend.new(), backend.new()]
    decisions = await asyncio.gather(
        *(clients[i % 2].reserve(request(cap, cost=25, now=T0 + i / 1000)) for i in range(200))
    )
    assert sum(d.allowed for d in decisions) == admitted_max
    assert (await state_of(clients[0], cap)).spend_this_month_nanos == 5 + admitted_max * 25
    refused = [d.denial for d in decisions if d.denial is not None]
    assert {(d.kind, d.limit) for d in refused} == {(LimitKind.SPEND, 5 + admitted_max * 25)}
    assert len(baseline.calls) <= len({id(c) for c in clients})  # one seed per process, not per request
