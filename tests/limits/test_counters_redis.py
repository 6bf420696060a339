"""What only the Redis backend has: its key layout, its timeouts, and surviving a Redis outage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from quotagate.errors import BackendUnavailable
from quotagate.limits.model import LimitCheck, Settlement
from quotagate.store.counters_common import RESERVATION_MARGIN_S, month_ttl_s
from quotagate.store.counters_redis import RedisCounters
from tests.limits.conftest import MONTH, T0, FakeBaseline, delete_prefix, redis_available, unique_prefix
from tests.limits.test_counters_contract import ORG, request
from tests.support.servers import redis_url, unavailable
from tests.support.throwaway import ThrowawayRedis

pytestmark = pytest.mark.redis


@pytest.fixture
async def shared() -> AsyncIterator[tuple[str, str]]:
    url, prefix = redis_url(), unique_prefix()
    await redis_available(url)
    yield url, prefix
    await delete_prefix(url, prefix)


@pytest.fixture
def throwaway() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    if server.binary() is None:
        unavailable("redis-server binary", "PATH", FileNotFoundError("redis-server"))
    server.start()
    yield server
    server.kill()


async def test_keys_carry_the_prefix_and_the_org_hash_tag_and_expire(shared: tuple[str, str]) -> None:
    url, prefix = shared
    counters = RedisCounters(url, prefix=prefix, timeout_ms=2000, baseline=FakeBaseline())
    rates = LimitCheck("k1", rpm_limit=5, tpm_limit=500)
    cap = LimitCheck("cap", spend_limit_nanos=1000)
    pre = LimitCheck("pre", prepaid=True, credit_id="project:p")
    booked = request(rates, cap, pre, tokens=10, cost=0, ttl=600, rid="r1")
    assert (await counters.reserve(booked)).allowed
    await counters.close()

    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        keys = {key async for key in client.scan_iter(match=f"{prefix}:*")}
        tag = f"{prefix}:{{{ORG}}}:"
        minute = int(T0 // 60)
        assert keys == {
            f"{tag}w:k1:{minute}",
            f"{tag}s:cap:{MONTH}",
            f"{tag}c:project:p",
            f"{tag}r:r1",
            f"{tag}exp",
            f"{tag}reg",
            f"{prefix}:{{~sweep}}:orgs",
        }
        # One decision touches one Redis Cluster slot; the sweep registry lives under its own tag.
        assert {key_slot(key.encode()) for key in keys if key.startswith(tag)} == {key_slot(ORG.encode())}
        ttl = {key.removeprefix(tag): await client.ttl(key) for key in keys if key.startswith(tag)}
        assert 110 <= ttl[f"w:k1:{minute}"] <= 120
        assert abs(ttl[f"s:cap:{MONTH}"] - month_ttl_s(MONTH, T0)) <= 5
        assert ttl["c:project:p"] == -1  # a credit balance has no window
        assert 600 + RESERVATION_MARGIN_S - 5 <= ttl["r:r1"] <= 600 + RESERVATION_MARGIN_S
        assert 600 + RESERVATION_MARGIN_S - 5 <= ttl["exp"] <= 600 + RESERVATION_MARGIN_S
        held = await client.hgetall(f"{tag}r:r1")
        assert held == {
            "t": "10",
            "c": "0",
            "a": repr(T0),
            "x": repr(T0 + 600),
            f"{tag}w:k1:{minute}": "w",
            f"{tag}s:cap:{MONTH}": "s",
            f"{tag}c:project:p": "c",
        }
    finally:
        await client.aclose()


async def test_extending_a_reservation_lengthens_its_key_lifetimes_and_a_sweep_marker_keeps_its_figures(
    shared: tuple[str, str],
) -> None:
    url, prefix = shared
    counters = RedisCounters(url, prefix=prefix, timeout_ms=2000, baseline=FakeBaseline())
    cap = LimitCheck("cap", spend_limit_nanos=1000)
    assert (await counters.reserve(request(cap, tokens=10, cost=100, ttl=600, rid="r1"))).allowed
    assert await counters.extend(ORG, "r1", T0 + 600 + 3000)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    tag = f"{prefix}:{{{ORG}}}:"
    try:
        # The hash outlives its new expiry by the same margin as before, and the expiry index lives as long.
        lifetime = 3600 + RESERVATION_MARGIN_S
        assert lifetime - 5 <= await client.ttl(f"{tag}r:r1") <= lifetime
        assert lifetime - 5 <= await client.ttl(f"{tag}exp") <= lifetime
        assert await client.hget(f"{tag}r:r1", "x") == repr(T0 + 3600)
        assert await client.zscore(f"{tag}exp", "r1") == T0 + 3600
        assert [e.reservation_id for e in await counters.expired(T0 + 3601)] == ["r1"]
        assert await counters.settle(Settlement("r1", ORG, 3, 30, provisional=True))
        marker = await client.hgetall(f"{tag}r:r1")
        assert (marker["done"], marker["t"], marker["c"]) == ("p", "3", "30")
        assert await client.zscore(f"{tag}exp", "r1") is None
        assert await counters.settle(Settlement("r1", ORG, 4, 40))
        assert await client.hgetall(f"{tag}r:r1") == {"done": "1"}
        assert lifetime - 5 <= await client.ttl(f"{tag}r:r1") <= lifetime
        assert await client.get(f"{tag}s:cap:{MONTH}") == "40"
    finally:
        await client.aclose()
        await counters.close()


def test_a_prefix_that_would_break_hash_tags_or_scans_is_refused() -> None:
    for prefix in ("", "qg{x}", "qg*", "q g"):
        with pytest.raises(ValueError, match="prefix"):
            RedisCounters("redis://127.0.0.1:6379/0", prefix=prefix, timeout_ms=100, baseline=FakeBaseline())


async def test_unreachable_redis_raises_backend_unavailable_within_the_timeout() -> None:
    from tests.support.throwaway import free_port

    counters = RedisCounters(
        f"redis://127.0.0.1:{free_port()}/0", prefix="qgtest", timeout_ms=200, baseline=FakeBaseline()
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"Redis at 127\.0\.0\.1"):
        await counters.reserve(request(LimitCheck("k", rpm_limit=1)))
    assert time.monotonic() - started < 1.0
    with pytest.raises(BackendUnavailable):
        await counters.ping()
    await counters.close()


async def test_outage_fails_closed_quickly_then_recovers_and_reseeds(throwaway: ThrowawayRedis) -> None:
    baseline = FakeBaseline(spend={"cap": 100})
    counters = RedisCounters(throwaway.url, prefix=unique_prefix(), timeout_ms=200, baseline=baseline)
    cap = LimitCheck("cap", spend_limit_nanos=1000)
    await counters.connect()
    assert (await counters.reserve(request(cap, cost=10))).remaining[0].spend_remaining_nanos == 890
    assert len(baseline.calls) == 1

    throwaway.pause()  # a stalled Redis: every call still ends within the timeout
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="within 200 ms"):
        await counters.reserve(request(cap, cost=10))
    assert time.monotonic() - started < 0.6
    throwaway.resume()
    # The timed-out call may still have been counted once Redis resumed (failing closed over-counts, never
    # under-counts), and its late reply must not be read as the answer to a later call.
    spent = (await counters.state(ORG, (cap,), T0, MONTH))[0].spend_this_month_nanos
    assert spent in (110, 120)
    assert (await counters.reserve(request(cap, cost=10))).remaining[0].spend_remaining_nanos == 1000 - spent - 10

    throwaway.kill()  # a dead Redis
    for call in (
        lambda: counters.reserve(request(cap, cost=10)),
        lambda: counters.settle(Settlement("x", ORG, 0, 0)),
        lambda: counters.expired(T0),
        lambda: counters.add_credits(ORG, "project:p", 1, 1),
        lambda: counters.state(ORG, (cap,), T0, MONTH),
        counters.ping,
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"Redis at 127\.0\.0\.1"):
            await call()
        assert time.monotonic() - started < 0.6

    # Back on the same port, empty (no persistence): the same object reconnects, reloads its scripts and
    # re-seeds spend from the durable store, which has moved on meanwhile.
    baseline.spend["cap"] = 500
    throwaway.start()
    decision = await counters.reserve(request(cap, cost=10))
    assert decision.allowed and decision.remaining[0].spend_remaining_nanos == 490
    assert len(baseline.calls) == 2
    await counters.ping()
    await counters.close()


async def test_a_flushed_script_cache_is_reloaded(throwaway: ThrowawayRedis) -> None:
    counters = RedisCounters(throwaway.url, prefix=unique_prefix(), timeout_ms=500, baseline=FakeBaseline())
    rpm = LimitCheck("k", rpm_limit=2)
    assert (await counters.reserve(request(rpm))).allowed
    client = aioredis.Redis.from_url(throwaway.url)
    await client.script_flush()
    await client.aclose()
    assert (await counters.reserve(request(rpm))).allowed
    assert not (await counters.reserve(request(rpm))).allowed
    await counters.close()


async def test_the_sweeper_finds_an_org_again_after_redis_lost_its_data(throwaway: ThrowawayRedis) -> None:
    counters = RedisCounters(throwaway.url, prefix=unique_prefix(), timeout_ms=500, baseline=FakeBaseline())
    rpm = LimitCheck("k", rpm_limit=100)
    assert (await counters.reserve(request(rpm, ttl=10))).allowed
    client = aioredis.Redis.from_url(throwaway.url)
    await client.flushall()
    await client.aclose()
    lost_and_rebooked = request(rpm, ttl=10)
    assert (await counters.reserve(lost_and_rebooked)).allowed
    assert [e.reservation_id for e in await counters.expired(T0 + 11)] == [lost_and_rebooked.reservation_id]
    await counters.close()
