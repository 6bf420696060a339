"""Reading usage events back: lookups for reconciliation."""

from __future__ import annotations

from pathlib import Path

from quotagate.metering.record import SWEPT_TAG
from quotagate.store.database import Database
from quotagate.store.spool import find_spooled
from quotagate.store.tables import UsageEvent


def recorded_figures(db: Database, request_id: str, spool_dir: Path | None = None) -> tuple[int, int] | None:
    """(total tokens, charged nanos) of the request's recorded usage event, or None if nobody recorded one.

    Looks in SQL, then in the spools under `spool_dir` (recorded but not written yet: the database is down, or
    the process that recorded it died). A sweeper's own event is not a record of the request's usage. Raises
    only when SQL failed and the spools hold nothing either."""
    failure: Exception | None = None
    try:
        with db.read() as session:
            event = session.get(UsageEvent, request_id)
            if event is not None and not swept_row(event):
                return row_tokens(event), event.cost_nanos
    except Exception as exc:  # the database is down: the spools may still know
        failure = exc
    if spool_dir is not None:
        for record in find_spooled(spool_dir, request_id):
            if not record.swept:
                return record.usage.total_tokens, record.cost.total_nanos
    if failure is not None:
        raise failure
    return None


def row_tokens(row: UsageEvent) -> int:
    """A stored event's total tokens, all classes (``Usage.total_tokens``)."""
    return row.input_tokens + row.cached_input_tokens + row.cache_write_tokens + row.output_tokens


def swept_row(row: UsageEvent) -> bool:
    """A stored sweeper's event (``UsageRecord.swept``): an estimate, not a record of the request's usage."""
    return (row.tags or {}).get(SWEPT_TAG) == "1"
