"""Fixtures of the counter contract suite: one `counters` fixture, run against every backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from quotagate.limits.model import Baseline, Counters
from quotagate.store.counters_memory import MemoryCounters
from tests.support.servers import RUN_ID, redis_url, unavailable

T0 = 1_800_000_000.0  # the start of a minute window (divisible by 60): 2027-01-15T08:00:00Z
MONTH = "2027-01"


@dataclass
class FakeBaseline:
    """A durable store seen through BaselineSource: records each call; `during` runs between its read and its
    return (what happens while a seed is in flight)."""

    spend: dict[str, int] = field(default_factory=dict)
    credits: dict[str, int] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, tuple[str, ...], tuple[str, ...], str]] = field(default_factory=list)
    during: Callable[[], Awaitable[None]] | None = None

    async def baseline(self, org_id: str, spend_ids: list[str], credit_ids: list[str], month: str) -> Baseline:
        self.calls.append((org_id, tuple(spend_ids), tuple(credit_ids), month))
        read = Baseline(dict(self.spend), dict(self.credits), dict(self.marks))
        if self.during is not None:
            hook, self.during = self.during, None
            await hook()
        return read


@dataclass
class Backend:
    kind: str
    new: Callable[[], Counters]  # another client on the same counters (memory: the same object)


async def redis_available(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    except Exception as exc:
        unavailable("Redis", url, exc)
    finally:
        await client.aclose()


async def delete_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def unique_prefix() -> str:
    return f"qgtest-{RUN_ID}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def baseline() -> FakeBaseline:
    return FakeBaseline()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest, baseline: FakeBaseline) -> AsyncIterator[Backend]:
    if request.param == "memory":
        memory = MemoryCounters(baseline)
        yield Backend("memory", lambda: memory)
        return
    from quotagate.store.counters_redis import RedisCounters

    url, prefix = redis_url(), unique_prefix()
    await redis_available(url)
    made: list[RedisCounters] = []

    def new() -> Counters:
        made.append(RedisCounters(url, prefix=prefix, timeout_ms=2000, baseline=baseline))
        return made[-1]

    yield Backend("redis", new)
    for client in made:
        await client.close()
    await delete_prefix(url, prefix)


@pytest.fixture
def counters(backend: Backend) -> Counters:
    return backend.new()
