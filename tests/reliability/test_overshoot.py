"""No overshoot under concurrency: 500 streaming and non-streaming requests against a limit that fits ~50 of them,
through the real Envoy, spread over two `quotagate serve` processes sharing Redis and PostgreSQL.

For a monthly spend cap, a tokens-per-minute limit and a prepaid credit balance (loaded through the admin API):
the settled figures stay within the limit, every admitted request is settled and recorded exactly once, the
Redis counters equal the recorded events to the nano (or token), no reservation is left behind, and both
workers made decisions (the limit is shared, not per process). The requests arrive spread over ~2 s, so
admissions interleave with settlements: refunds of the worst case are re-used, which is where an
accounting bug would let the total drift past the limit.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from quotagate.apis import Api
from quotagate.store.tables import LedgerEntry, UsageEvent
from quotagate.tokens import estimate_prompt_tokens
from tests.reliability.cluster import Cluster, running_cluster
from tests.reliability.conftest import org, require_redis
from tests.reliability.load import Tally, body_for, send
from tests.support.pg import PgDatabases

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

REQUESTS = 500
FITS = 50  # the limit fits about this many requests' actual usage
OUTPUT_TOKENS = 16  # the fake provider's default reply length
MAX_TOKENS = 64
INPUT_RATE, OUTPUT_RATE = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini in examples/local-demo.yaml, per 1M


def typical_usage() -> tuple[int, int]:
    """(tokens, nanos) one request of the mix actually uses (the fake provider counts prompts as the gateway does)."""
    prompt = estimate_prompt_tokens(Api.OPENAI_CHAT, body_for("chat", 250, max_tokens=MAX_TOKENS)[1])
    nanos = int((prompt * INPUT_RATE + OUTPUT_TOKENS * OUTPUT_RATE) * 1000)
    return prompt + OUTPUT_TOKENS, nanos


TOKENS, NANOS = typical_usage()
CAP_NANOS = FITS * NANOS


def _edit(doc: dict[str, Any]) -> None:
    cap = str(Decimal(CAP_NANOS) / 10**9)
    doc["organizations"] += [
        org(
            "spend",
            quotas=[
                {"scope_type": "key", "key_id": "spend-key", "monthly_spend_limit": cap, "monthly_spend_unit": "usd"}
            ],
        ),
        org("tpm", quotas=[{"scope_type": "project", "project_id": "proj-tpm", "tpm_limit": FITS * TOKENS}]),
        org("credit", quotas=[{"scope_type": "project", "project_id": "proj-credit", "prepaid": True}]),
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_databases: PgDatabases) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path_factory.mktemp("overshoot"),
        database_url=pg_databases.new_database(),
        redis_url=require_redis(),
        edit=_edit,
        key_ids=("demo-key", "spend-key", "tpm-key", "credit-key"),
    ) as c:
        yield c


def run_burst(cluster: Cluster, key_id: str, seed: int) -> Tally:
    """REQUESTS requests, half of them streams, started at random moments over ~2 s, all in flight together."""
    rng = random.Random(seed)
    credential = cluster.credential(key_id)

    async def one(client: httpx.AsyncClient, i: int) -> Any:
        await asyncio.sleep(rng.uniform(0, 2.0))
        stream = i % 2 == 0
        headers = {"x-fake-chunk-delay-ms": "15"} if stream else {"x-fake-latency-ms": "150"}
        return await send(
            client, "chat_stream" if stream else "chat", i, credential, max_tokens=MAX_TOKENS, headers=headers
        )

    async def main() -> Tally:
        limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
        async with httpx.AsyncClient(base_url=cluster.url, limits=limits, timeout=120) as client:
            results = await asyncio.gather(*(one(client, i) for i in range(REQUESTS)))
        tally = Tally()
        for r in results:
            tally.add(r)
        return tally

    return asyncio.run(main())


def check_every_request_accounted(cluster: Cluster, tally: Tally, org_id: str, limit_reason: str) -> list[UsageEvent]:
    """Every 200 has one allowed, settled (reported) usage event; every refusal is the limit's; nothing else."""
    statuses = tally.statuses()
    assert set(statuses) <= {200, 429}, (statuses, [r for r in tally.results if r.status not in (200, 429)][:3])
    assert set(tally.reasons()) == {limit_reason}, tally.reasons()
    admitted = tally.ok()
    assert len({r.request_id for r in admitted}) == len(admitted)
    where = (UsageEvent.organization_id == org_id,)
    assert cluster.wait_events(REQUESTS, *where) == REQUESTS
    with cluster.app() as app, app.db.read() as session:
        events = list(session.scalars(select(UsageEvent).where(*where)))
        debits = session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.organization_id == org_id, LedgerEntry.kind == "usage")
        )
        for e in events:
            session.expunge(e)
    allowed = [e for e in events if e.decision == "allowed"]
    assert {e.request_id for e in allowed} == {r.request_id for r in admitted}
    assert all(e.status == 200 and e.usage_source == "reported" and e.error is None for e in allowed)
    assert all(e.output_tokens == OUTPUT_TOKENS for e in allowed)
    assert debits == len(allowed)  # one ledger debit per admitted request, none for refusals
    assert cluster.outstanding_reservations() == [], "a reservation was left behind"
    assert all(cluster.redis().zcard(k) == 0 for k in cluster.redis_keys("*:exp")), "an expiry index still lists one"
    decided = [_decisions(w.metrics()) for w in cluster.workers]
    assert all(d > 0 for d in decided), f"one worker made every decision: {decided}"
    return allowed


def _decisions(metrics: str) -> int:
    found = re.search(r"^quotagate_decision_seconds_count (\S+)$", metrics, re.M)
    return int(float(found.group(1))) if found else 0


def _redis_int(cluster: Cluster, pattern: str, field: str | None = None) -> int:
    keys = cluster.redis_keys(pattern)
    assert len(keys) == 1, keys
    client = cluster.redis()
    try:
        raw = client.hget(keys[0], field) if field else client.get(keys[0])
    finally:
        client.close()
    return int(raw or 0)


def test_spend_cap_is_never_exceeded(cluster: Cluster) -> None:
    tally = run_burst(cluster, "spend-key", seed=1)
    allowed = check_every_request_accounted(cluster, tally, "org-spend", "insufficient_quota")
    spent = sum(e.cost_nanos for e in allowed)
    worst = max(e.reserved_nanos for e in allowed)
    print(f"\nspend cap {CAP_NANOS} nanos: {len(allowed)} admitted, {spent} spent, worst case {worst}/request")
    assert spent <= CAP_NANOS
    # Not vacuous: more were admitted than worst-case reservations alone would fit, so refunds were re-used.
    assert len(allowed) > CAP_NANOS // worst
    assert _redis_int(cluster, "{org-spend}:s:*") == spent  # the live counter equals the recorded events


def test_tpm_limit_is_never_exceeded_in_any_window(cluster: Cluster) -> None:
    tally = run_burst(cluster, "tpm-key", seed=2)
    allowed = check_every_request_accounted(cluster, tally, "org-tpm", "rate_limit_tpm")
    windows: dict[int, int] = defaultdict(int)
    for e in allowed:
        started = e.started_at if e.started_at.tzinfo else e.started_at.replace(tzinfo=UTC)
        windows[int(started.timestamp() // 60)] += e.input_tokens + e.cached_input_tokens + e.output_tokens
    print(f"\nTPM limit {FITS * TOKENS}: {len(allowed)} admitted, tokens per window {dict(windows)}")
    assert all(tokens <= FITS * TOKENS for tokens in windows.values())
    assert len(allowed) > FITS * TOKENS // max(e.reserved_tokens for e in allowed)
    client = cluster.redis()
    try:
        for minute, tokens in windows.items():
            keys = [k for k in cluster.redis_keys("{org-tpm}:w:*") if k.endswith(f":{minute}")]
            assert len(keys) == 1 and int(client.hget(keys[0], "t") or 0) == tokens
    finally:
        client.close()


def test_prepaid_credits_are_never_overdrawn(cluster: Cluster) -> None:
    loaded = CAP_NANOS
    r = httpx.post(
        cluster.url + "/admin/credits",
        json={"scope_type": "project", "scope_id": "proj-credit", "amount": str(Decimal(loaded) / 10**9)},
        headers={"authorization": f"Bearer {cluster.admin_token}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    tally = run_burst(cluster, "credit-key", seed=3)
    allowed = check_every_request_accounted(cluster, tally, "org-credit", "insufficient_quota")
    spent = sum(e.cost_nanos for e in allowed)
    print(f"\ncredits {loaded} nanos: {len(allowed)} admitted, {spent} spent")
    assert spent <= loaded
    assert len(allowed) > loaded // max(e.reserved_nanos for e in allowed)
    assert _redis_int(cluster, "{org-credit}:c:project:proj-credit", "b") == loaded - spent
    with cluster.app() as app, app.db.read() as session:
        balance = session.scalar(
            select(func.sum(LedgerEntry.amount_nanos)).where(LedgerEntry.organization_id == "org-credit")
        )
    assert balance == loaded - spent >= 0  # the ledger agrees: credits minus debits


def test_the_cluster_logs_no_error(cluster: Cluster) -> None:
    """Runs last in this module: nothing above made a worker log an error or a traceback."""
    for worker in cluster.workers:
        assert worker.alive
        bad = [line for line in worker.log().splitlines() if " ERROR " in line or "Traceback" in line]
        assert not bad, bad[:5]
