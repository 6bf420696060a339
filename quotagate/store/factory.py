"""The one place that decides which storage and counter backends a process uses."""

from __future__ import annotations

from quotagate.settings import Settings
from quotagate.store.database import Database


def open_database(settings: Settings) -> Database:
    """PostgreSQL when QUOTAGATE_DATABASE_URL says so, else the embedded SQLite file in QUOTAGATE_HOME."""
    return Database(settings.effective_database_url)
