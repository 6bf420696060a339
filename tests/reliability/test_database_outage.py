"""PostgreSQL stopped mid-run: usage events wait in the spool and all land once it is back, none twice.

1,000 requests: 300 before the outage, 400 spread over it (a few seconds in CI, 30 s under QUOTAGATE_SOAK=1), 300
after. Every one is admitted and metered while the database is down (metering never blocks), the writer is seen
failing and the spool growing, and afterwards there is exactly one event and one ledger debit per request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, func, select

from quotagate.gateway.outcome import Allow
from quotagate.runtime import GatewayRuntime
from quotagate.store.tables import LedgerEntry, UsageEvent
from tests.reliability.conftest import scaled
from tests.support.gateway import (
    apply_manifest,
    chat_request,
    edit_manifest,
    issue_key,
    manifest_text,
    running_runtime,
)
from tests.support.throwaway import throwaway_postgres

pytestmark = pytest.mark.postgres
REPLY = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
).encode()


BEFORE, DURING, AFTER = 300, 400, 300
OUTAGE_S = scaled(3.0, 30.0)


async def _request(rt: GatewayRuntime, credential: str) -> None:
    out = await rt.gatekeeper.check(chat_request(credential))
    assert isinstance(out, Allow), out  # admitted, database or not
    meter = rt.meter(out.ticket)
    meter.response_headers(200, "application/json")
    meter.chunk(REPLY)
    await meter.finish()


async def test_postgres_outage_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-test")
    total = BEFORE + DURING + AFTER
    with throwaway_postgres() as pg:
        monkeypatch.setenv("QUOTAGATE_DATABASE_URL", pg.url)
        # Every PostgreSQL deployment signs its ledger checkpoints (a gateway refuses to start without a key).
        monkeypatch.setenv("QUOTAGATE_LEDGER_SIGNING_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
        apply_manifest(
            edit_manifest(manifest_text(), lambda d: d["organizations"][0]["quotas"][1].update(rpm_limit=10**6))
        )
        cred = issue_key("demo-key")
        async with running_runtime() as rt:
            for _ in range(BEFORE):
                await _request(rt, cred)
            await asyncio.to_thread(rt.writer.flush, 60)
            written, failures = rt.writer.written, rt.writer.failures
            await asyncio.to_thread(pg.stop)  # immediate shutdown, like a crash
            down_at = time.monotonic()
            for i in range(DURING):  # paced over the whole outage
                await _request(rt, cred)
                await asyncio.sleep(max(0.0, down_at + OUTAGE_S * (i + 1) / DURING - time.monotonic()))
            # The outage was real and long: the writer kept failing against it, nothing was written, all is spooled.
            assert time.monotonic() - down_at >= OUTAGE_S
            assert rt.writer.failures > failures
            assert rt.writer.written == written
            assert rt.writer.depth() == DURING
            await asyncio.to_thread(pg.start)
            for _ in range(AFTER):
                await _request(rt, cred)
            await asyncio.to_thread(rt.writer.flush, 60)
            assert rt.writer.depth() == 0
        engine = create_engine(pg.url)
        with engine.connect() as conn:
            events = conn.scalar(select(func.count()).select_from(UsageEvent))
            distinct = conn.scalar(select(func.count(func.distinct(UsageEvent.request_id))))
            entries = conn.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "usage"))
            refs = conn.scalar(select(func.count(func.distinct(LedgerEntry.ref))).where(LedgerEntry.kind == "usage"))
            nanos = conn.scalar(select(func.sum(UsageEvent.cost_nanos)))
            debits = conn.scalar(select(func.sum(LedgerEntry.amount_nanos)).where(LedgerEntry.kind == "usage"))
        engine.dispose()
    assert events == distinct == total
    assert entries == refs == total  # one debit per request: none lost, none twice
    assert debits is not None and nanos == -debits
    # 11 input at 0.15 + 7 output at 0.60 per 1M, per request, exact
    assert nanos == total * int((11 * Decimal("0.15") + 7 * Decimal("0.60")) * 1000)  # 5,850 nanos each
