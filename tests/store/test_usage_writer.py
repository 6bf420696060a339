"""The usage writer against values the database would refuse, on SQLite and PostgreSQL.

Provider- and client-controlled text (a served model name, error text, tags) is cleaned to fit its column; an
event the database still refuses is set aside durably, and never holds back the events spooled after it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quotagate.metering.record import UsageRecord
from quotagate.store.database import Database
from quotagate.store.spool import Quarantine
from quotagate.store.tables import UsageEvent
from quotagate.store.usage_writer import UsageWriter


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


def _event(rid: str, **changes: object) -> UsageRecord:
    base = UsageRecord(
        request_id=rid,
        started_at=time.time(),
        status=200,
        decision="denied",
        deny_reason="rate_limited_rpm",
        model_requested="gpt-4o-mini",
    )
    return UsageRecord(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **changes})  # type: ignore[arg-type]


def _stored(db: Database) -> dict[str, UsageEvent]:
    with db.read() as session:
        return {row.request_id: row for row in session.scalars(select(UsageEvent))}


def test_nul_bytes_and_overlong_provider_text_are_cleaned_and_land(db: Database, tmp_path: Path) -> None:
    writer = UsageWriter(db, tmp_path / "spool")
    writer.record(
        _event(
            "r-dirty",
            model_served="gpt\x00-4o" + "m" * 400,
            error="upstream said \x00 nothing",
            tags={"team\x00": "ml\x00"},
        )
    )
    writer.flush(timeout=10)
    row = _stored(db)["r-dirty"]
    assert row.model_served is not None
    assert "\x00" not in row.model_served
    assert row.model_served.startswith("gpt\ufffd-4o")
    assert len(row.model_served) == 200  # the column's length
    assert row.error == "upstream said \ufffd nothing"
    assert row.tags == {"team\ufffd": "ml\ufffd"}
    assert writer.depth() == 0
    writer.stop()


def test_an_event_the_database_refuses_is_set_aside_and_the_rest_land(db: Database, tmp_path: Path) -> None:
    """A value no cleaning fixes (a token count past BIGINT, still within what the spool encodes): it alone is quarantined, durably, with the reason."""
    writer = UsageWriter(db, tmp_path / "spool")
    for rid, changes in (("r-1", {}), ("r-poison", {"reserved_tokens": 2**63}), ("r-2", {})):
        writer.record(_event(rid, **changes))
    writer.flush(timeout=10)
    assert set(_stored(db)) == {"r-1", "r-2"}
    assert writer.depth() == 0  # not stuck: the spool drained
    [(reason, event)] = Quarantine(tmp_path / "spool").events()
    assert event.request_id == "r-poison"
    assert event.reserved_tokens == 2**63
    assert reason
    # Events after it keep landing.
    writer.record(_event("r-3"))
    writer.flush(timeout=10)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(UsageEvent)) == 3
    writer.stop()


def test_events_arriving_during_a_write_wait_for_the_next_round_unless_the_batch_was_full(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches grow with the rate: a drain does not chase the one or two events spooled while it wrote (each
    would cost a transaction of its own), except behind a full batch, where more are surely waiting."""
    writer = UsageWriter(db, tmp_path / "spool")
    real_write = writer._write
    arrivals = iter(range(100))

    def write_while_events_arrive(events: list[UsageRecord]) -> None:
        real_write(events)
        writer.record(_event(f"late-{next(arrivals)}"))

    monkeypatch.setattr(writer, "_write", write_while_events_arrive)
    for i in range(3):
        writer.record(_event(f"r-{i}"))
    assert writer.drain_once() == 3
    assert writer.depth() == 1  # the late one waits for the next round

    monkeypatch.setattr("quotagate.store.usage_writer.BATCH", 2)
    assert writer.drain_once() == 1  # under a batch: one round
    for i in range(4):
        writer.record(_event(f"s-{i}"))
    # 5 spooled, batches of 2, each write spooling one more: four full batches, then a partial one ends the round
    assert writer.drain_once() == 2 + 2 + 2 + 2 + 1
    assert len(_stored(db)) == 3 + 1 + 9 and writer.depth() == 1
    monkeypatch.setattr(writer, "_write", real_write)
    writer.stop()
    assert len(_stored(db)) == 14
