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
