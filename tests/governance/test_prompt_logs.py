"""Prompt logging: nothing stored under `off`, redacted or full content written off the request path,
request and response merged across processes, retention purged with an audit record on the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select

from quotagate.gateway.outcome import Allow
from quotagate.gateway.ticket import Ticket
from quotagate.governance.policy import ProjectPolicy, PromptLogMode
from quotagate.governance.retention import PromptRetention
from quotagate.ledger.checkpoint import KeyRing
from quotagate.runtime import GatewayRuntime
from quotagate.store.ledger_audit import verify_org
from quotagate.store.prompt_log_writer import PromptLogWriter
from quotagate.store.prompt_logs_repo import Content, save_content
from quotagate.store.tables import AdminAuditEvent, LedgerEntry, PromptLog
from tests.governance.conftest import project_of
from tests.support.gateway import chat_request

PROMPT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "I am bob@example.com, card 4111 1111 1111 1111, re TICKET-77"}],
}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Call +1 (415) 555-2671, bob."}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
}


def logging(mode: str, retention_days: int = 30, redact: list[dict[str, str]] | None = None):  # type: ignore[no-untyped-def]
    def edit(doc: dict[str, Any]) -> None:
        policy: dict[str, Any] = {"mode": mode, "retention_days": retention_days}
        if redact:
            policy["redact"] = redact
        project_of(doc)["prompt_logging"] = policy

    return edit


async def exchange(rt: GatewayRuntime, cred: str) -> Ticket:
    out = await rt.gatekeeper.check(chat_request(cred, PROMPT))
    assert isinstance(out, Allow)
    meter = rt.meter(out.ticket)
    meter.response_headers(200, "application/json")
    meter.chunk(orjson.dumps(ANSWER))
    await meter.finish()
    return out.ticket


def stored(rt: GatewayRuntime) -> list[PromptLog]:
    with rt.app.db.read() as session:
        rows = list(session.scalars(select(PromptLog)))
        session.expunge_all()
    return rows


async def test_off_stores_nothing_and_queues_nothing(gateway: Any) -> None:
    async with gateway(logging("off")) as (rt, cred):
        await exchange(rt, cred)
        assert rt.prompt_log is not None and rt.prompt_log.depth() == 0
        rt.prompt_log.drain_once()
        assert stored(rt) == []


async def test_default_is_off(gateway: Any) -> None:
    async with gateway(lambda doc: None) as (rt, cred):
        await exchange(rt, cred)
        assert rt.prompt_log is not None and rt.prompt_log.depth() == 0


async def test_redacted(gateway: Any) -> None:
    async with gateway(logging("redacted", redact=[{"name": "ticket", "pattern": "TICKET-[0-9]+"}])) as (rt, cred):
        ticket = await exchange(rt, cred)
        assert rt.prompt_log is not None
        # Capture only queued the content; the thread writes it.
        rt.prompt_log.drain_once()
        [row] = stored(rt)
        assert (row.request_id, row.project_id, row.mode) == (ticket.request_id, "proj-demo", "redacted")
        body = orjson.loads(row.request_body or "")
        assert body["messages"][0]["content"] == (
            "I am [REDACTED:email], card [REDACTED:card_number], re [REDACTED:ticket]"
        )
        assert row.response_text == "Call [REDACTED:phone], bob."
        assert row.redactions == {"email": 1, "card_number": 1, "ticket": 1, "phone": 1}
        assert row.expires_at - row.created_at == timedelta(days=30)


async def test_full(gateway: Any) -> None:
    async with gateway(logging("full", retention_days=7)) as (rt, cred):
        await exchange(rt, cred)
        assert rt.prompt_log is not None
        rt.prompt_log.drain_once()
        [row] = stored(rt)
        assert orjson.loads(row.request_body or "") == PROMPT
        assert row.response_text == ANSWER["choices"][0]["message"]["content"]  # type: ignore[index]
        assert row.redactions == {}


def _ticket(request_id: str) -> Ticket:
    from quotagate.apis import Api, Provider

    return Ticket(
        request_id=request_id,
        started_at=0.0,
        org_id="org-demo",
        project_id="proj-demo",
        client_id="client-demo",
        key_id="demo-key",
        provider=Provider.OPENAI,
        api=Api.OPENAI_CHAT,
        model="gpt-4o-mini",
        model_requested="gpt-4o-mini",
        stream=False,
        reservation_id="",
        reserved_tokens=0,
        reserved_nanos=0,
        prompt_estimate=0,
    )


FULL = ProjectPolicy(prompt_mode=PromptLogMode.FULL)


async def test_request_and_response_merge_across_processes(gateway: Any, use_database: str) -> None:
    """Envoy may send Check to one process and the response to another: two writers, one row."""
    async with gateway(logging("full")) as (rt, _):
        check_side = PromptLogWriter(rt.app.db, lambda _p: FULL)
        response_side = PromptLogWriter(rt.app.db, lambda _p: FULL)
        response_side.response(_ticket("req-merge-1"), "the answer")  # the response side may land first
        response_side.drain_once()
        check_side.request(_ticket("req-merge-1"), b'{"model":"gpt-4o-mini"}')
        check_side.drain_once()
        [row] = stored(rt)
        assert (row.request_body, row.response_text) == ('{"model":"gpt-4o-mini"}', "the answer")


def test_a_full_queue_drops_instead_of_waiting(tmp_path: Any) -> None:
    writer = PromptLogWriter(db=None, policy_of=lambda _p: FULL, max_queue=2)  # type: ignore[arg-type]
    for i in range(5):
        writer.request(_ticket(f"req-{i}"), b"{}")
    assert (writer.depth(), writer.dropped) == (2, 3)


async def test_retention_purge_is_recorded(gateway: Any, use_database: str) -> None:
    async with gateway(logging("redacted", retention_days=30)) as (rt, _):
        now = datetime.now(UTC)
        rows = [
            Content("old-1", "org-demo", "proj-demo", "redacted", now - timedelta(days=31), 30, "a", "b"),
            Content("old-2", "org-demo", "proj-demo", "redacted", now - timedelta(days=40), 30, "a", "b"),
            Content("fresh", "org-demo", "proj-demo", "redacted", now - timedelta(days=2), 30, "a", "b"),
        ]
        with rt.app.db.transaction() as session:
            save_content(session, rows)
        purger = PromptRetention(rt.app.db, rt.config, interval_s=3600)
        assert purger.purge_once() == {"org-demo": 2}
        assert [r.request_id for r in stored(rt)] == ["fresh"]
        assert purger.purge_once() == {}  # nothing left to purge: nothing recorded
        with rt.app.db.read() as session:
            [event] = session.scalars(select(AdminAuditEvent).where(AdminAuditEvent.action == "prompt_logs.purge"))
            assert event.actor == "system:prompt-retention" and event.organization_id == "org-demo"
            assert event.after is not None and event.after["purged"] == 2
            entry = session.scalar(select(LedgerEntry).where(LedgerEntry.ref == f"audit:{event.id}"))
            assert entry is not None and entry.kind == "admin"
            assert verify_org(session, "org-demo", KeyRing([])).ok


async def test_a_shortened_retention_applies_to_what_is_stored(gateway: Any, use_database: str) -> None:
    async with gateway(logging("full", retention_days=5)) as (rt, _):
        now = datetime.now(UTC)
        with rt.app.db.transaction() as session:  # captured while the retention was 30 days
            save_content(session, [Content("ten-days", "org-demo", "proj-demo", "full", now - timedelta(days=10), 30)])
            save_content(session, [Content("one-day", "org-demo", "proj-demo", "full", now - timedelta(days=1), 30)])
        assert PromptRetention(rt.app.db, rt.config, interval_s=3600).purge_once() == {"org-demo": 1}
        assert [r.request_id for r in stored(rt)] == ["one-day"]
