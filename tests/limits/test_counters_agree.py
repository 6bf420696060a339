"""The backends agree: random sequences of reserve, settle, add_credits, expired and state give the same answers
from the in-process and the Redis backend (a differential test on top of the contract suite)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotagate.limits.model import Counters, LimitCheck, ReservationRequest, Settlement
from quotagate.store.counters_memory import MemoryCounters
from quotagate.store.counters_redis import RedisCounters
from tests.limits.conftest import MONTH, T0, FakeBaseline, delete_prefix, redis_available, unique_prefix
from tests.support.servers import redis_url

pytestmark = pytest.mark.redis

ORG = "acme"
POOL = (
    LimitCheck("rates", rpm_limit=3, tpm_limit=900),
    LimitCheck("cap", spend_limit_nanos=1200),
    LimitCheck("pre", prepaid=True, credit_id="project:p"),
    LimitCheck("watch", False, 2, 300, 400, prepaid=True, credit_id="project:p"),  # monitor only
    LimitCheck("both", rpm_limit=6, spend_limit_nanos=2500, prepaid=True, credit_id="org:acme"),
)


@dataclass(frozen=True)
class Reserve:
    checks: tuple[int, ...]
    tokens: int
    cost: int
    advance: float
    ttl: int


@dataclass(frozen=True)
class Settle:
    which: int
    tokens: int
    cost: int


@dataclass(frozen=True)
class Credit:
    credit: str
    nanos: int
    seq: int


@dataclass(frozen=True)
class Sweep:
    advance: float


@dataclass(frozen=True)
class State:
    pass


RESERVES = st.builds(
    Reserve,
    st.lists(st.integers(0, len(POOL) - 1), min_size=0, max_size=3, unique=True).map(tuple),
    st.integers(0, 500),
    st.integers(0, 900),
    st.sampled_from([0.0, 0.5, 7.0, 30.0, 61.0]),
    st.sampled_from([30, 90]),
)
OPS = st.one_of(
    RESERVES,
    RESERVES,  # twice as likely: limits must be reached often
    st.builds(Settle, st.integers(0, 50), st.integers(0, 500), st.integers(0, 900)),
    st.builds(Credit, st.sampled_from(["project:p", "org:acme"]), st.integers(-300, 800), st.integers(1, 6)),
    st.builds(Sweep, st.sampled_from([0.0, 40.0, 100.0])),
    st.just(State()),
)


async def apply(counters: Counters, ops: list[Any]) -> list[Any]:
    answers: list[Any] = []
    now = T0 + 13.0
    reserved: list[str] = []
    for i, op in enumerate(ops):
        if isinstance(op, Reserve):
            now += op.advance
            rid = f"r{i}"
            checks = tuple(POOL[j] for j in op.checks)
            decision = await counters.reserve(
                ReservationRequest(ORG, rid, checks, op.tokens, op.cost, now, MONTH, op.ttl)
            )
            reserved.append(rid)
            answers.append(decision)
        elif isinstance(op, Settle):
            rid = reserved[op.which % len(reserved)] if reserved else "none"
            answers.append(await counters.settle(Settlement(rid, ORG, op.tokens, op.cost)))
        elif isinstance(op, Credit):
            answers.append(await counters.add_credits(ORG, op.credit, op.nanos, op.seq))
        elif isinstance(op, Sweep):
            now += op.advance
            answers.append(sorted(await counters.expired(now), key=lambda e: e.reservation_id))
        else:
            answers.append(await counters.state(ORG, POOL, now, MONTH))
    return answers


async def both(ops: list[Any], url: str) -> tuple[list[Any], list[Any]]:
    def fresh_baseline() -> FakeBaseline:
        return FakeBaseline(
            spend={"cap": 200, "watch": 100}, credits={"project:p": 900, "org:acme": 300}, marks={"project:p": 2}
        )

    memory = MemoryCounters(fresh_baseline())
    prefix = unique_prefix()
    shared = RedisCounters(url, prefix=prefix, timeout_ms=2000, baseline=fresh_baseline())
    try:
        return await apply(memory, ops), await apply(shared, ops)
    finally:
        await shared.close()
        await delete_prefix(url, prefix)


@pytest.fixture(scope="module")
def url() -> str:
    found = redis_url()
    asyncio.run(redis_available(found))
    return found


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=8, max_size=30))
def test_memory_and_redis_give_the_same_answers(url: str, ops: list[Any]) -> None:
    memory, shared = asyncio.run(both(ops, url))
    for op, mine, theirs in zip(ops, memory, shared, strict=True):
        assert mine == theirs, op
