"""Readiness probes of the store."""

from __future__ import annotations

from sqlalchemy import text

from quotagate.store.database import Database


def ping(db: Database) -> None:
    """One round trip; raises BackendUnavailable when the database cannot be reached."""
    with db.read() as session:
        session.execute(text("SELECT 1"))
