"""Reading usage events back: lookups for reconciliation."""

from __future__ import annotations

from quotagate.store.database import Database
from quotagate.store.tables import UsageEvent


def recorded_figures(db: Database, request_id: str) -> tuple[int, int] | None:
    """(total tokens, charged nanos) of a stored usage event, or None."""
    with db.read() as session:
        event = session.get(UsageEvent, request_id)
        if event is None:
            return None
        tokens = event.input_tokens + event.cached_input_tokens + event.cache_write_tokens + event.output_tokens
        return tokens, event.cost_nanos
