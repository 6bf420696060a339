"""A `quotagate serve` worker SIGKILLed while streams are in flight through Envoy, on PostgreSQL and Redis.

While PostgreSQL is kept from accepting usage rows (a table lock: the database is slow, so events wait in each
worker's spool), worker 0 is killed mid-stream. Then:

* once Envoy's health check marks it down, every new request is served by worker 1, without an error;
* the dead worker's reservations stop being extended and are swept (reservation_ttl_s = 10 s) by worker 1;
* the events the dead worker had spooled but not written are adopted by worker 1 and land exactly once;
* every admitted request has exactly one usage event, and the Redis spend counters equal the recorded spend to
  the nano; no reservation is left;
* the shared access log holds one bare JSON object per line, the swept requests' lines included.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, func, select, text

from quotagate.policy import counter_id
from quotagate.store.tables import UsageEvent
from tests.reliability.cluster import Cluster, Worker, running_cluster
from tests.reliability.load import Result, send
from tests.support.envoy import stored_snapshot
from tests.support.gateway import SEED_LOG_FIELDS
from tests.support.pg import PgDatabases

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

TTL_S = 10
STREAMS = 8
STREAM_HEADERS = {"x-fake-chunk-delay-ms": "250", "x-fake-output-tokens": "20"}  # ~5 s each
SEED_FIELDS = set(SEED_LOG_FIELDS)


def _edit(doc: dict) -> None:  # type: ignore[type-arg]
    doc["organizations"][0]["quotas"][1].update(rpm_limit=10**6, tpm_limit=10**9)


@pytest.fixture
def cluster(tmp_path: Path, pg_databases: PgDatabases, shared_redis: str) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path,
        database_url=pg_databases.new_database(),
        redis_url=shared_redis,
        edit=_edit,
        reservation_ttl_s=str(TTL_S),
        access_log_path=str(tmp_path / "access.jsonl"),
    ) as c:
        yield c


def wait_for(what: str, done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}")
        time.sleep(0.1)


def spool_of(cluster: Cluster, worker: Worker) -> Path | None:
    found = sorted((cluster.workdir / "home" / "spool").glob(f"spool-{worker.process.pid}-*.db"))
    return found[0] if found else None


def spooled_ids(path: Path | None) -> set[str]:
    if path is None or not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {rid for (rid,) in conn.execute("SELECT request_id FROM events")}
    finally:
        conn.close()


def marked_down(cluster: Cluster, worker: Worker) -> bool:
    """Envoy's active health check failed the worker in both gRPC clusters (Check and metering)."""
    text_ = httpx.get(f"{cluster.envoy.admin_url}/clusters", timeout=5).text
    flags = [line for line in text_.splitlines() if f"::{worker.grpc}::health_flags::" in line]
    return len(flags) == 2 and all("failed_active_hc" in line for line in flags)


def events_of(cluster: Cluster, ids: set[str]) -> dict[str, UsageEvent]:
    with cluster.app() as app, app.db.read() as session:
        return {e.request_id: e for e in session.scalars(select(UsageEvent).where(UsageEvent.request_id.in_(ids)))}


def spend_counters(cluster: Cluster) -> dict[str, int]:
    """The live Redis monthly spend of every spend-capped quota, by scope type."""
    quotas = [q for qs in stored_snapshot(cluster.settings).quotas.values() for q in qs]
    month = datetime.now(UTC).strftime("%Y-%m")
    client = cluster.redis()
    try:
        return {
            q.scope_type: int(client.get(f"{cluster.prefix}:{{org-demo}}:s:{counter_id(q)}:{month}") or 0)
            for q in quotas
            if q.monthly_spend_nanos is not None
        }
    finally:
        client.close()


async def _requests(cluster: Cluster, kind: str, first: int, n: int, **options: object) -> list[Result]:
    credential = cluster.credential("demo-key")
    async with httpx.AsyncClient(base_url=cluster.url, timeout=60) as client:
        return list(await asyncio.gather(*(send(client, kind, first + i, credential, **options) for i in range(n))))  # type: ignore[arg-type]


def test_a_worker_killed_mid_stream_loses_nothing_and_leaves_nothing(cluster: Cluster) -> None:
    doomed, survivor = cluster.workers
    engine = create_engine(cluster.settings.effective_database_url)
    lock = engine.connect()
    hold = lock.begin()
    lock.execute(text("LOCK TABLE usage_events IN EXCLUSIVE MODE"))  # usage rows wait; reads still work
    try:
        # Finished requests whose events sit unwritten in both workers' spools, the doomed one's included.
        done: list[Result] = []
        while not spooled_ids(spool_of(cluster, doomed)):
            assert len(done) < 60, "no request was ever metered by worker 0"
            done += asyncio.run(_requests(cluster, "chat", len(done), 4))
        assert all(r.status == 200 for r in done), [r for r in done if r.status != 200][:2]

        async def scenario() -> tuple[list[Result], set[str], list[Result]]:
            streams = asyncio.create_task(_requests(cluster, "chat_stream", 1000, STREAMS, headers=STREAM_HEADERS))
            await asyncio.to_thread(
                wait_for, "every stream reserved", lambda: len(cluster.outstanding_reservations()) >= STREAMS, 10
            )
            await asyncio.sleep(0.5)  # the responses have started: their meters are open on both workers
            assert not streams.done()
            cluster.kill_worker(doomed)
            left_behind = spooled_ids(spool_of(cluster, doomed))
            await asyncio.to_thread(wait_for, "Envoy marks worker 0 down", lambda: marked_down(cluster, doomed), 15)
            after = await _requests(cluster, "chat", 2000, 10)
            return await streams, left_behind, after

        streams, left_behind, after = asyncio.run(scenario())
    finally:
        hold.rollback()  # the database accepts usage rows again
        lock.close()
        engine.dispose()

    assert not doomed.alive and survivor.alive
    assert [r.status for r in streams] == [200] * STREAMS  # metering dying never broke a response
    assert [r.status for r in after] == [200] * len(after)  # no errors once the health check noticed
    assert left_behind, "worker 0 had no unwritten events when it died"

    admitted = {r.request_id for r in [*done, *streams, *after] if r.status == 200 and r.request_id}
    assert len(admitted) == len(done) + STREAMS + len(after)  # each has its own request id
    wait_for("the killed worker's reservations are swept", lambda: cluster.outstanding_reservations() == [], TTL_S + 15)
    wait_for("every admitted request has its event", lambda: len(events_of(cluster, admitted)) == len(admitted), 20)
    wait_for("worker 0's spool is adopted and gone", lambda: spool_of(cluster, doomed) is None, 10)

    events = events_of(cluster, admitted)
    with cluster.app() as app, app.db.read() as session:
        total = session.scalar(select(func.count()).select_from(UsageEvent))
        spent = session.scalar(select(func.sum(UsageEvent.cost_nanos)).where(UsageEvent.decision == "allowed"))
        by_key = session.scalar(
            select(func.sum(UsageEvent.cost_nanos)).where(
                UsageEvent.decision == "allowed", UsageEvent.key_id == "demo-key"
            )
        )
    assert total == len(admitted)  # exactly one event each: nothing lost, nothing twice, no stray sweep
    # The dead worker's spooled events landed with their real figures, not as sweeps.
    assert all(events[rid].usage_source == "reported" and "swept" not in events[rid].tags for rid in left_behind)
    swept = {rid for rid, e in events.items() if e.tags.get("swept") == "1"}
    stream_ids = {r.request_id for r in streams if r.request_id}
    assert swept and swept <= stream_ids  # only streams metered by worker 0 were swept
    for rid in swept:  # charged the prompt estimate, marked estimated
        e = events[rid]
        assert (e.status, e.usage_source, e.output_tokens) == (0, "estimated", 0)
        assert 0 < e.cost_nanos < e.reserved_nanos and e.input_tokens > 0 and e.key_id == "demo-key"
    assert all(events[rid].usage_source == "reported" for rid in admitted - swept)

    counters = spend_counters(cluster)
    assert counters == {"organization": spent, "key": by_key}  # Redis equals the recorded spend, to the nano
    assert cluster.outstanding_reservations() == []

    lines = (cluster.workdir / "access.jsonl").read_text().splitlines()
    logged = [orjson.loads(line) for line in lines]
    assert all(isinstance(entry, dict) and entry.keys() >= SEED_FIELDS for entry in logged)
    assert all(line.startswith("{") and line.endswith("}") for line in lines)
    by_id = {entry["request_id"]: entry for entry in logged}
    assert swept <= by_id.keys()
    assert {by_id[rid]["cost_status"] for rid in swept} == {"estimated"}
    assert {by_id[rid]["status"] for rid in swept} == {"0"}
    assert {r.request_id for r in after} <= by_id.keys()
