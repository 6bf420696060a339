"""PostgreSQL stopped mid-run: usage events wait in the spool and all land once it is back, none twice."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, func, select

from quotagate.gateway.outcome import Allow
from quotagate.store.tables import LedgerEntry, UsageEvent
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


async def test_postgres_outage_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-test")
    total = 1000
    with throwaway_postgres() as pg:
        monkeypatch.setenv("QUOTAGATE_DATABASE_URL", pg.url)
        apply_manifest(
            edit_manifest(manifest_text(), lambda d: d["organizations"][0]["quotas"][1].update(rpm_limit=10**6))
        )
        cred = issue_key("demo-key")
        async with running_runtime() as rt:
            for i in range(total):
                if i == 300:
                    await asyncio.to_thread(pg.stop)  # immediate shutdown, like a crash
                if i == 700:
                    await asyncio.to_thread(pg.start)
                out = await rt.gatekeeper.check(chat_request(cred))
                assert isinstance(out, Allow), out
                meter = rt.meter(out.ticket)
                meter.response_headers(200, "application/json")
                meter.chunk(REPLY)
                await meter.finish()
            await asyncio.to_thread(rt.writer.flush, 60)
        engine = create_engine(pg.url)
        with engine.connect() as conn:
            events = conn.scalar(select(func.count()).select_from(UsageEvent))
            entries = conn.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "usage"))
            nanos = conn.scalar(select(func.sum(UsageEvent.cost_nanos)))
            debits = conn.scalar(select(func.sum(LedgerEntry.amount_nanos)).where(LedgerEntry.kind == "usage"))
        engine.dispose()
    assert events == total
    assert entries == total
    assert nanos == -debits
    # 11 input at 0.15 + 7 output at 0.60 per 1M, per request, exact
    assert nanos == total * int((11 * Decimal("0.15") + 7 * Decimal("0.60")) * 1000)  # 5,850 nanos each
