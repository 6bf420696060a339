"""Redis killed and restarted (empty: no persistence) under load, through Envoy and two `quotagate serve` processes.

During the outage Check fails closed: 503 `limits_unavailable`, in the provider's error shape, never an admission
without a reservation. Without a restart of anything else, admissions resume once Redis is back; afterwards the
re-seeded spend counters equal the recorded events to the nano (requests in flight across the restart included:
their reservations died with Redis), and no reservation is left behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from quotagate.policy import counter_id
from quotagate.store.tables import UsageEvent
from tests.reliability.cluster import Cluster, running_cluster
from tests.reliability.conftest import scaled
from tests.reliability.load import Result, send
from tests.support.pg import PgDatabases
from tests.support.servers import unavailable
from tests.support.throwaway import ThrowawayRedis, throwaway_redis

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

CLIENTS = 24
LONG = 8  # streams in flight across the whole outage
BEFORE_S, OUTAGE_S, AFTER_S = scaled((2.5, 3.0, 3.0), (10.0, 30.0, 20.0))


def _edit(doc: dict) -> None:  # type: ignore[type-arg]
    doc["organizations"][0]["quotas"][1].update(rpm_limit=10**6, tpm_limit=10**9)


@pytest.fixture
def redis_server() -> Iterator[ThrowawayRedis]:
    if ThrowawayRedis.binary() is None:
        unavailable("redis-server (a throwaway server to kill)", "PATH", FileNotFoundError("redis-server"))
    with throwaway_redis() as server:
        yield server


@pytest.fixture
def cluster(tmp_path, pg_databases: PgDatabases, redis_server: ThrowawayRedis) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    with running_cluster(
        tmp_path, database_url=pg_databases.new_database(), redis_url=redis_server.url, edit=_edit
    ) as c:
        yield c


async def _load(cluster: Cluster, stop_at: float, log: list[tuple[float, float, Result]]) -> None:
    credential = cluster.credential("demo-key")
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    async with httpx.AsyncClient(base_url=cluster.url, limits=limits, timeout=60) as client:

        async def loop(n: int) -> None:
            i = n
            while time.monotonic() < stop_at:
                stream = i % 2 == 0
                headers = {"x-fake-chunk-delay-ms": "40"} if stream else {"x-fake-latency-ms": "100"}
                started = time.monotonic()
                result = await send(client, "chat_stream" if stream else "chat", i, credential, headers=headers)
                log.append((started, time.monotonic(), result))
                if result.status == 503:
                    await asyncio.sleep(0.05)
                i += CLIENTS

        await asyncio.gather(*(loop(n) for n in range(CLIENTS)))


def test_redis_killed_and_restarted_fails_closed_then_recovers_consistently(
    cluster: Cluster, redis_server: ThrowawayRedis
) -> None:
    log: list[tuple[float, float, Result]] = []
    t0 = time.monotonic()

    async def long_streams() -> list[Result]:
        # In flight across the whole outage: admitted before it, finished after Redis came back empty.
        delay = int((OUTAGE_S + 2.5) * 1000 / 20)
        headers = {"x-fake-chunk-delay-ms": str(delay), "x-fake-output-tokens": "20"}
        async with httpx.AsyncClient(base_url=cluster.url, timeout=120) as client:
            return list(
                await asyncio.gather(
                    *(send(client, "chat_stream", 10_000 + i, credential, headers=headers) for i in range(LONG))
                )
            )

    async def scenario() -> tuple[float, float, list[Result]]:
        load = asyncio.create_task(_load(cluster, t0 + BEFORE_S + OUTAGE_S + AFTER_S, log))
        await asyncio.sleep(BEFORE_S - 1.0)
        spanning = asyncio.create_task(long_streams())
        await asyncio.sleep(1.0)
        killed = time.monotonic()
        await asyncio.to_thread(redis_server.kill)  # streams are in flight: their reservations die with Redis
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(redis_server.start)  # same port, empty
        restarted = time.monotonic()
        await load
        return killed, restarted, await spanning

    credential = cluster.credential("demo-key")
    killed, restarted, spanning = asyncio.run(scenario())
    assert [r.status for r in spanning] == [200] * LONG, spanning  # metering never blocks traffic
    results = [r for _, _, r in log] + spanning
    statuses = {r.status for r in results}
    assert statuses <= {200, 503}, [r for r in results if r.status not in (200, 503)][:3]
    unavailable = [r for r in results if r.status == 503]
    assert unavailable, "the outage was not observed"
    assert {r.deny_reason for r in unavailable} == {"limits_unavailable"}
    assert all(b'"code":"limits_unavailable"' in r.body for r in unavailable)
    # Requests that started and ended inside the outage were all refused; the service came back by itself.
    inside = [r for s, e, r in log if killed + 0.5 < s and e < restarted]
    assert inside and all(r.status == 503 for r in inside)
    after = [r for s, _, r in log if s > restarted + 1.0]
    assert after and all(r.status == 200 for r in after), {r.status for r in after}

    admitted = [r for r in results if r.status == 200]
    assert cluster.wait_events(len(results), UsageEvent.decision.in_(("allowed", "denied"))) == len(results)
    with cluster.app() as app, app.db.read() as session:
        allowed = session.scalar(select(func.count()).select_from(UsageEvent).where(UsageEvent.decision == "allowed"))
        spent = session.scalar(select(func.sum(UsageEvent.cost_nanos)).where(UsageEvent.decision == "allowed"))
        no_reservation = session.scalar(
            select(func.count())
            .select_from(UsageEvent)
            .where(UsageEvent.decision == "allowed", UsageEvent.reserved_nanos == 0)
        )
    assert allowed == len(admitted)
    assert no_reservation == 0  # nothing was let through unreserved (fail closed, not monitor-only)

    # Consistent after: the org-wide spend counter was re-seeded and equals the recorded spend to the nano.
    deadline = time.monotonic() + 20
    while cluster.outstanding_reservations() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.outstanding_reservations() == []
    quota = next(q for q in _quotas(cluster) if q.scope_type == "organization")
    month = datetime.now(UTC).strftime("%Y-%m")
    client = cluster.redis()
    try:
        live = int(client.get(f"{cluster.prefix}:{{org-demo}}:s:{counter_id(quota)}:{month}") or 0)
    finally:
        client.close()
    assert spent > 0
    assert live == spent, (live, spent, spent - live)


def _quotas(cluster: Cluster):  # type: ignore[no-untyped-def]
    from tests.support.envoy import stored_snapshot

    return [q for quotas in stored_snapshot(cluster.settings).quotas.values() for q in quotas]
