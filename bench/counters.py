"""Micro-benchmark of the counter backends (not a test): reserve + settle pairs, in-process and Redis.

For 1 and 3 checks per request (3: key RPM/TPM, project spend cap, prepaid credits), prints a markdown table
of pairs per second and the p50/p99 latency of one pair from a single task, and pairs per second from 32
concurrent tasks (how one gateway process drives the backend under load).

    .venv/bin/python bench/counters.py [--pairs 20000] [--redis-url redis://127.0.0.1:6379/0] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from quotagate.limits.model import Baseline, Counters, LimitCheck, ReservationRequest, Settlement
from quotagate.store.counters_memory import MemoryCounters

ORG = "bench-org"
BIG = 2**50
CHECKS = {
    1: (LimitCheck("key", rpm_limit=BIG, tpm_limit=BIG),),
    3: (
        LimitCheck("key", rpm_limit=BIG, tpm_limit=BIG),
        LimitCheck("project", spend_limit_nanos=BIG),
        LimitCheck("prepaid", prepaid=True, credit_id="project:bench"),
    ),
}


class Durable:
    async def baseline(self, org_id: str, spend_ids: list[str], credit_ids: list[str], month: str) -> Baseline:
        return Baseline({}, dict.fromkeys(credit_ids, BIG), {})


def requests(checks: tuple[LimitCheck, ...], n: int) -> list[tuple[ReservationRequest, Settlement]]:
    run = uuid.uuid4().hex[:6]
    now = time.time()
    return [
        (
            ReservationRequest(ORG, f"{run}-{i}", checks, 1200, 9_000_000, now, "2026-11", 600),
            Settlement(f"{run}-{i}", ORG, 700, 4_000_000),
        )
        for i in range(n)
    ]


async def sequential(counters: Counters, checks: tuple[LimitCheck, ...], n: int) -> tuple[float, float, float]:
    pairs = requests(checks, n)
    await counters.reserve(pairs[0][0])  # seeds the counters and warms connections and scripts
    await counters.settle(pairs[0][1])
    took: list[float] = []
    started = time.perf_counter()
    for reserve, settle in pairs[1:]:
        t = time.perf_counter()
        await counters.reserve(reserve)
        await counters.settle(settle)
        took.append(time.perf_counter() - t)
    rate = len(took) / (time.perf_counter() - started)
    q = statistics.quantiles(took, n=100)
    return rate, q[49] * 1e6, q[98] * 1e6


async def concurrent(counters: Counters, checks: tuple[LimitCheck, ...], n: int, tasks: int = 32) -> float:
    pairs = requests(checks, n)
    queue = iter(pairs)

    async def worker() -> None:
        for reserve, settle in queue:
            await counters.reserve(reserve)
            await counters.settle(settle)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return n / (time.perf_counter() - started)


async def bench(name: str, counters: Counters, n: int) -> list[str]:
    rows = []
    for size, checks in CHECKS.items():
        rate, p50, p99 = await sequential(counters, checks, n)
        busy = await concurrent(counters, checks, n)
        rows.append(f"| {name} | {size} | {rate:,.0f} | {p50:,.1f} | {p99:,.1f} | {busy:,.0f} |")
    return rows


async def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--pairs", type=int, default=20_000, help="reserve+settle pairs per case (Redis: a tenth)")
    args.add_argument("--redis-url", default=os.environ.get("QUOTAGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args.add_argument("--no-redis", action="store_true", help="only the in-process backend")
    opts = args.parse_args()
    rows = await bench("in-process", MemoryCounters(Durable()), opts.pairs)
    if not opts.no_redis:
        from quotagate.store.counters_redis import RedisCounters

        prefix = f"qgbench-{uuid.uuid4().hex[:8]}"
        redis = RedisCounters(opts.redis_url, prefix=prefix, timeout_ms=1000, baseline=Durable())
        try:
            rows += await bench("Redis", redis, max(1000, opts.pairs // 10))
        finally:
            await redis.close()
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(opts.redis_url)
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
    print("| backend | checks | reserve+settle/s (1 task) | p50 µs | p99 µs | reserve+settle/s (32 tasks) |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
