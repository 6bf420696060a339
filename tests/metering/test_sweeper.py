"""The sweeper over a real runtime (SQLite store, in-process counters, the usage writer and its spool).

Expiry is reached by giving the sweeper a clock past the reservation TTL, so nothing waits for it. Every test checks
the three places money lives: the live spend counters, the usage events, and the hash-chained ledger.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from quotagate.gateway.outcome import Allow
from quotagate.gateway.ticket import Ticket
from quotagate.ledger.checkpoint import KeyRing
from quotagate.limits.model import Settlement
from quotagate.metering.meter import Meter
from quotagate.metering.record import CostBreakdown, UsageRecord
from quotagate.metering.sweeper import Sweeper
from quotagate.money import charge_nanos
from quotagate.policy import limit_checks, quotas_of
from quotagate.runtime import GatewayRuntime
from quotagate.store.database import Database
from quotagate.store.ledger_audit import verify_org
from quotagate.store.spool import Spool, find_spooled
from quotagate.store.tables import LedgerEntry, UsageEvent
from quotagate.store.usage_repo import recorded_figures
from quotagate.store.usage_writer import write_events
from quotagate.usage.model import Usage, UsageSource
from tests.support.gateway import apply_manifest, chat_request, issue_key, manifest_text, running_runtime

TTL_S = 10
ORG = "org-demo"
REPLY = orjson.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
)
REAL_NANOS = 5850  # 11 input at 0.15 + 7 output at 0.60 per 1M tokens


def prompt_nanos(ticket: Ticket) -> int:
    """What a swept request is charged: its prompt estimate at gpt-4o-mini's input rate."""
    return charge_nanos(Decimal(ticket.prompt_estimate) * Decimal("0.15") / 10**6)


class ProcessKilled(BaseException):
    """Stands for SIGKILL at the point it is raised: nothing after it runs (not even `except Exception`)."""


class KilledBeforeSettling:
    """Counters of a process that dies the moment it tries to settle."""

    async def settle(self, settlement: Settlement) -> bool:
        raise ProcessKilled


@pytest.fixture
def credential(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-test")  # the manifest's provider credential
    apply_manifest(manifest_text())
    return issue_key("demo-key")


@pytest.fixture
async def rt(credential: str) -> AsyncIterator[GatewayRuntime]:
    async with running_runtime(reservation_ttl_s=TTL_S) as runtime:
        yield runtime


async def admit(rt: GatewayRuntime, credential: str) -> Ticket:
    out = await rt.gatekeeper.check(chat_request(credential))
    assert isinstance(out, Allow), out
    return out.ticket


def sweeper_after_ttl(rt: GatewayRuntime, find: Callable[[str], tuple[int, int] | None] | None = None) -> Sweeper:
    """The runtime's sweeper, wired the same way, with a clock past every reservation's expiry."""
    spool_dir = rt.settings.home / "spool"
    return Sweeper(
        counters=rt.counters,
        find_recorded=find or (lambda rid: recorded_figures(rt.app.db, rid, spool_dir)),
        sink=rt.meter_services.sink,
        config=rt.config,
        clock=lambda: time.time() + TTL_S + 1,
    )


async def spend(rt: GatewayRuntime, ticket: Ticket) -> list[int]:
    """Live monthly spend of every spend-capped scope the ticket's request counts in (org and key)."""
    snap = rt.config.snapshot
    checks = limit_checks(
        quotas_of(snap, ticket.org_id, ticket.project_id, ticket.client_id, ticket.key_id), "gpt-4o-mini"
    )
    month = datetime.now(UTC).strftime("%Y-%m")
    states = await rt.counters.state(ORG, checks, time.time(), month)
    return [s.spend_this_month_nanos for c, s in zip(checks, states, strict=True) if c.spend_limit_nanos is not None]


async def respond(meter: Meter) -> UsageRecord:
    meter.response_headers(200, "application/json")
    meter.chunk(REPLY)
    return await meter.finish()


def events(rt: GatewayRuntime, rid: str) -> list[UsageEvent]:
    with rt.app.db.read() as session:
        return list(session.scalars(select(UsageEvent).where(UsageEvent.request_id == rid)))


def ledger(rt: GatewayRuntime, rid: str) -> list[tuple[str, int, dict]]:  # type: ignore[type-arg]
    with rt.app.db.read() as session:
        rows = session.scalars(select(LedgerEntry).where(LedgerEntry.ref == rid).order_by(LedgerEntry.seq))
        return [(r.kind, r.amount_nanos, orjson.loads(r.body)["data"]) for r in rows]


def chain_verifies(rt: GatewayRuntime) -> bool:
    with rt.app.db.read() as session:
        return verify_org(session, ORG, KeyRing([])).ok


async def flush(rt: GatewayRuntime) -> None:
    await asyncio.to_thread(rt.writer.flush, 30)


# --- the reservation's event exists: settle with its real figures ------------------------------------------------


async def test_a_kill_between_spooling_and_settling_is_settled_from_the_spooled_event(
    rt: GatewayRuntime, credential: str
) -> None:
    """Meter.finish records the event durably before it settles: dying in between loses nothing."""
    ticket = await admit(rt, credential)
    before_admission = [n - ticket.reserved_nanos for n in await spend(rt, ticket)]
    dying = Meter(ticket, replace(rt.meter_services, counters=KilledBeforeSettling()))  # type: ignore[arg-type]
    with pytest.raises(ProcessKilled):
        await respond(dying)
    # The reservation still holds the worst case; the event is spooled (or already written).
    assert await spend(rt, ticket) == [n + ticket.reserved_nanos for n in before_admission]
    assert recorded_figures(rt.app.db, ticket.request_id, rt.settings.home / "spool") == (18, REAL_NANOS)

    sweeper = sweeper_after_ttl(rt)
    assert await sweeper.sweep_once() == 1
    assert await spend(rt, ticket) == [n + REAL_NANOS for n in before_admission]  # exact: the real figures
    assert await sweeper.sweep_once() == 0  # claimed once
    await flush(rt)
    (event,) = events(rt, ticket.request_id)
    assert (event.cost_nanos, event.usage_source, event.tags.get("swept")) == (REAL_NANOS, "reported", None)
    assert [(kind, amount) for kind, amount, _ in ledger(rt, ticket.request_id)] == [("usage", -REAL_NANOS)]
    # A replay of the spooled event (its process died before deleting it) changes nothing.
    replay = _record_of(rt, ticket.request_id)
    with rt.app.db.transaction() as session:
        assert write_events(session, [replay]).inserted == 0
    assert len(ledger(rt, ticket.request_id)) == 1
    assert await spend(rt, ticket) == [n + REAL_NANOS for n in before_admission]
    assert chain_verifies(rt)


class SlowThenBack:
    """Counters that time out on the first `failures` settlements (Redis slow), then are the runtime's again."""

    def __init__(self, real: object, failures: int) -> None:
        self._real, self.failures = real, failures

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    async def settle(self, settlement: Settlement) -> bool:
        if self.failures:
            self.failures -= 1
            raise TimeoutError("Redis did not answer settle within 250 ms")
        return await self._real.settle(settlement)  # type: ignore[attr-defined, no-any-return]


async def test_a_settlement_that_timed_out_is_retried_on_the_next_round_not_at_expiry(
    rt: GatewayRuntime, credential: str
) -> None:
    ticket = await admit(rt, credential)
    before_admission = [n - ticket.reserved_nanos for n in await spend(rt, ticket)]
    flaky = SlowThenBack(rt.counters, failures=2)
    now_sweeper = Sweeper(
        counters=flaky,  # type: ignore[arg-type]
        find_recorded=lambda rid: None,
        sink=rt.meter_services.sink,
        config=rt.config,
    )
    services = replace(rt.meter_services, counters=flaky, settle_later=now_sweeper.retry_later)  # type: ignore[arg-type]
    record = await respond(Meter(ticket, services))
    assert record.cost.total_nanos == REAL_NANOS
    assert await spend(rt, ticket) == [n + ticket.reserved_nanos for n in before_admission]  # still the worst case

    assert await now_sweeper.sweep_once() == 0  # nothing expired; the retry times out again and is kept
    assert await spend(rt, ticket) == [n + ticket.reserved_nanos for n in before_admission]
    assert await now_sweeper.sweep_once() == 0  # the backend answers: settled with the real figures
    assert await spend(rt, ticket) == [n + REAL_NANOS for n in before_admission]
    assert await now_sweeper.sweep_once() == 0
    assert await spend(rt, ticket) == [n + REAL_NANOS for n in before_admission]  # once only
    assert await sweeper_after_ttl(rt).sweep_once() == 0  # no reservation left for the expiry sweep


async def test_retries_stop_at_the_first_failure_of_a_round_and_the_list_is_bounded(
    rt: GatewayRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = SlowThenBack(rt.counters, failures=1)
    sweeper = Sweeper(counters=flaky, find_recorded=lambda rid: None, sink=rt.meter_services.sink, config=rt.config)  # type: ignore[arg-type]
    pending = [Settlement(f"r{i}", ORG, 1, 1) for i in range(5)]
    for s in pending:
        sweeper.retry_later(s)
    await sweeper.sweep_once()  # the first times out: the other four are not tried (each would wait its timeout)
    assert flaky.failures == 0 and sweeper._unsettled == pending
    await sweeper.sweep_once()
    assert sweeper.retrying == 0

    monkeypatch.setattr("quotagate.metering.sweeper.MAX_UNSETTLED", 3)
    for s in pending:
        sweeper.retry_later(s)
    assert sweeper._unsettled == pending[2:]  # the oldest dropped: their reservations expire and are reconciled


def _record_of(rt: GatewayRuntime, rid: str) -> UsageRecord:
    (e,) = events(rt, rid)
    return UsageRecord(
        request_id=rid,
        started_at=e.started_at.replace(tzinfo=UTC).timestamp(),
        status=e.status,
        decision=e.decision,
        org_id=e.organization_id,
        key_id=e.key_id,
        usage=Usage(e.input_tokens, e.cached_input_tokens, e.cache_write_tokens, e.output_tokens),
        reserved_nanos=e.reserved_nanos,
    )


# --- nobody saw the response: charge the prompt estimate, as a `sweep` entry ------------------------------------


async def test_an_unseen_request_is_charged_its_prompt_estimate_as_a_sweep_entry(
    rt: GatewayRuntime, credential: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quotagate.access")
    ticket = await admit(rt, credential)  # its process dies before any response: no meter ever runs
    before_admission = [n - ticket.reserved_nanos for n in await spend(rt, ticket)]
    charged = prompt_nanos(ticket)
    assert 0 < charged < ticket.reserved_nanos

    assert await sweeper_after_ttl(rt).sweep_once() == 1
    assert await spend(rt, ticket) == [n + charged for n in before_admission]
    await flush(rt)
    (event,) = events(rt, ticket.request_id)
    assert event.tags["swept"] == "1" and event.tags["tag"] == "demo"  # the client's default tag survived the note
    assert (event.organization_id, event.project_id, event.client_id, event.key_id) == (
        ORG,
        "proj-demo",
        "client-demo",
        "demo-key",
    )
    assert (event.provider, event.model_served, event.status, event.decision) == ("openai", "gpt-4o-mini", 0, "allowed")
    assert (event.input_tokens, event.output_tokens, event.usage_source) == (ticket.prompt_estimate, 0, "estimated")
    assert (event.cost_nanos, event.reserved_nanos) == (charged, ticket.reserved_nanos)
    assert event.cost_input == Decimal(ticket.prompt_estimate) * Decimal("0.15") / 10**6
    ((kind, amount, data),) = ledger(rt, ticket.request_id)
    assert (kind, amount, data["swept"], data["source"]) == ("sweep", -charged, True, "estimated")
    assert (data["reserved_nanos"], data["reserved_tokens"]) == (ticket.reserved_nanos, ticket.reserved_tokens)
    assert data["tokens"]["input"] == ticket.prompt_estimate
    assert chain_verifies(rt)
    access = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "quotagate.access"]
    (line,) = [a for a in access if a["request_id"] == ticket.request_id]  # swept requests get their line too
    assert (line["cost_status"], line["gateway_key_id"], line["status"]) == ("estimated", "demo-key", "0")
    assert line["total_cost"] == f"{Decimal(charged) / 10**9:.9f}"


async def test_a_reservation_without_a_note_is_released_and_recorded_at_zero(rt: GatewayRuntime) -> None:
    """An older process's reservation (no note): nothing is known to charge, the worst case is released."""
    from quotagate.limits.model import ExpiredReservation

    sweeper = sweeper_after_ttl(rt)
    record = sweeper.swept_record(ExpiredReservation("r-old", ORG, 100, 5000, time.time() - 20))
    assert record.swept and record.cost.total_nanos == 0 and record.usage.source is UsageSource.ESTIMATED
    assert (record.reserved_tokens, record.reserved_nanos, record.key_id) == (100, 5000, None)


# --- the real figures arrive after all: they win everywhere --------------------------------------------------------


async def test_a_real_event_after_the_sweep_wins_in_counters_events_and_ledger(
    rt: GatewayRuntime, credential: str
) -> None:
    ticket = await admit(rt, credential)
    before_admission = [n - ticket.reserved_nanos for n in await spend(rt, ticket)]
    meter = rt.meter(ticket)  # a stream still running while its reservation expires (its extensions failed)
    meter.response_headers(200, "application/json")
    assert await sweeper_after_ttl(rt).sweep_once() == 1
    await flush(rt)
    charged = prompt_nanos(ticket)
    (swept,) = events(rt, ticket.request_id)
    assert swept.tags["swept"] == "1" and swept.cost_nanos == charged

    meter.chunk(REPLY)
    await meter.finish()  # the real figures: counters topped up by the meter's own settlement
    assert await spend(rt, ticket) == [n + REAL_NANOS for n in before_admission]
    await flush(rt)
    (event,) = events(rt, ticket.request_id)  # the row now holds the real usage
    assert (event.cost_nanos, event.input_tokens, event.output_tokens, event.status) == (REAL_NANOS, 11, 7, 200)
    assert event.usage_source == "reported"
    assert "swept" not in event.tags and event.tags["superseded_sweep"] == "1"
    entries = ledger(rt, ticket.request_id)  # append-only: the sweep's debit is credited back, then the real debit
    assert [(kind, amount) for kind, amount, _ in entries] == [
        ("sweep", -charged),
        ("sweep", charged),
        ("usage", -REAL_NANOS),
    ]
    assert sum(amount for _, amount, _ in entries) == -event.cost_nanos
    assert entries[1][2]["reverses"] == _seq_of_first(rt, ticket.request_id)
    assert chain_verifies(rt)
    assert recorded_figures(rt.app.db, ticket.request_id) == (18, REAL_NANOS)
    assert await spend(rt, ticket) == [n + REAL_NANOS for n in before_admission]  # the writer's resettle: no-op


def _seq_of_first(rt: GatewayRuntime, rid: str) -> int:
    with rt.app.db.read() as session:
        first = session.scalars(select(LedgerEntry.seq).where(LedgerEntry.ref == rid).order_by(LedgerEntry.seq)).first()
    assert first is not None
    return first


async def test_the_writer_corrects_the_counters_when_no_meter_is_left_to(rt: GatewayRuntime, credential: str) -> None:
    """The event was recorded but the sweep could not see it (lookup failed): provisional estimate, then the writer
    meets the real event and hands its figures to the counters."""
    ticket = await admit(rt, credential)
    before_admission = [n - ticket.reserved_nanos for n in await spend(rt, ticket)]
    dying = Meter(ticket, replace(rt.meter_services, counters=KilledBeforeSettling()))  # type: ignore[arg-type]
    with pytest.raises(ProcessKilled):
        await respond(dying)

    def unreachable(rid: str) -> tuple[int, int] | None:
        raise OSError("database and spools unreachable")

    assert await sweeper_after_ttl(rt, unreachable).sweep_once() == 1
    await flush(rt)
    for _ in range(500):  # the correction runs on the event loop, handed over from the writer's thread
        if await spend(rt, ticket) == [n + REAL_NANOS for n in before_admission]:
            break
        await asyncio.sleep(0.02)
    assert await spend(rt, ticket) == [n + REAL_NANOS for n in before_admission]
    (event,) = events(rt, ticket.request_id)
    assert event.cost_nanos == REAL_NANOS
    assert sum(amount for _, amount, _ in ledger(rt, ticket.request_id)) == -REAL_NANOS
    assert chain_verifies(rt)


# --- write_events: one event per request, real beats swept -------------------------------------------------------


def _record(rid: str, *, swept: bool, nanos: int, tokens: int = 10) -> UsageRecord:
    return UsageRecord(
        request_id=rid,
        started_at=time.time(),
        status=0 if swept else 200,
        decision="allowed",
        org_id=ORG,
        key_id="demo-key",
        usage=Usage(input_tokens=tokens, source=UsageSource.ESTIMATED if swept else UsageSource.REPORTED),
        cost=CostBreakdown(total_nanos=nanos),
        reserved_tokens=100,
        reserved_nanos=10_000,
        tags={"swept": "1"} if swept else {},
    )


async def test_write_events_prefers_the_real_event_of_a_batch_and_reports_it_for_the_counters(
    rt: GatewayRuntime,
) -> None:
    batch = [
        _record("both", swept=True, nanos=100),
        _record("both", swept=False, nanos=700, tokens=40),
        _record("both", swept=False, nanos=999),  # a replay of a different figure never wins over the first
        _record("only-swept", swept=True, nanos=300),
        _record("real-then-swept", swept=False, nanos=500),
        _record("real-then-swept", swept=True, nanos=1),
    ]
    with rt.app.db.transaction() as session:
        written = write_events(session, batch)
    assert (written.inserted, written.replaced) == (3, 0)
    assert sorted(written.resettle, key=lambda s: s.reservation_id) == [
        Settlement("both", ORG, 40, 700),
        Settlement("real-then-swept", ORG, 10, 500),
    ]
    assert [e.cost_nanos for e in events(rt, "both")] == [700]
    assert [e.cost_nanos for e in events(rt, "real-then-swept")] == [500]
    assert [(k, a) for k, a, _ in ledger(rt, "both")] == [("usage", -700)]
    assert [(k, a) for k, a, _ in ledger(rt, "only-swept")] == [("sweep", -300)]
    # Later: a swept replay of a real row is dropped (and reported); the real event of a swept row replaces it.
    with rt.app.db.transaction() as session:
        again = write_events(
            session, [_record("both", swept=True, nanos=5), _record("only-swept", swept=False, nanos=800)]
        )
    assert (again.inserted, again.replaced) == (0, 1)
    assert sorted(again.resettle, key=lambda s: s.reservation_id) == [
        Settlement("both", ORG, 40, 700),
        Settlement("only-swept", ORG, 10, 800),
    ]
    assert [(k, a) for k, a, _ in ledger(rt, "only-swept")] == [("sweep", -300), ("sweep", 300), ("usage", -800)]
    assert [e.cost_nanos for e in events(rt, "only-swept")] == [800]
    with rt.app.db.transaction() as session:  # a replay of everything: nothing moves
        assert write_events(session, batch).inserted == 0
    assert len(ledger(rt, "only-swept")) == 3 and len(ledger(rt, "both")) == 1
    assert chain_verifies(rt)


# --- find_recorded looks in the spools too -----------------------------------------------------------------------


def test_recorded_figures_find_spooled_events_and_ignore_swept_ones(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    other_process = Spool(spool_dir)  # a live spool of another process sharing the home, not yet written
    other_process.append(_record("spooled", swept=False, nanos=700, tokens=40))
    other_process.append(_record("swept-only", swept=True, nanos=300))
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        assert recorded_figures(db, "spooled", spool_dir) == (40, 700)
        assert recorded_figures(db, "spooled") is None  # SQL alone does not know it yet
        assert recorded_figures(db, "swept-only", spool_dir) is None  # a sweep is no record of usage
        assert recorded_figures(db, "unknown", spool_dir) is None
    finally:
        db.close()
    down = Database(f"sqlite:///{tmp_path / 'missing' / 'store.db'}", auto_upgrade=False)  # unreachable store
    try:
        assert recorded_figures(down, "spooled", spool_dir) == (40, 700)  # the spool still answers
        with pytest.raises(Exception, match=r"unreachable|unable to open"):
            recorded_figures(down, "unknown", spool_dir)  # neither knows: not "unrecorded", an error
    finally:
        down.close()
        other_process.close(remove_if_empty=False)


def test_a_spool_written_before_request_ids_were_indexed_is_found_once_adopted(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    old = sqlite3.connect(spool_dir / "spool-1-00000000.db")  # the earlier layout: no request_id column
    old.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)")
    old.execute(
        "INSERT INTO events (body) VALUES (?)", (orjson.dumps(_record("legacy", swept=False, nanos=9).to_json()),)
    )
    old.commit()
    old.close()
    assert find_spooled(spool_dir, "legacy") == []  # unreadable by id until adopted (skipped, not an error)
    (adopted,) = list(Spool.adopt_orphans(spool_dir))
    try:
        assert [r.cost.total_nanos for r in adopted.find("legacy")] == [9]
        assert [r.request_id for r in find_spooled(spool_dir, "legacy")] == ["legacy"]
    finally:
        adopted.close(remove_if_empty=False)
