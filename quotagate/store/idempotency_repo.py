"""Idempotency keys: a POST replayed with the same key by the same actor returns the first response.

The key's row is inserted *before* the work runs, in the same transaction: a concurrent duplicate then
waits on the row (PostgreSQL) or on the write lock (SQLite) and, once the first commits, replays its
response instead of doing the work twice. A failed request leaves no row, so it can be retried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quotagate.errors import ConflictError
from quotagate.store.database import Database
from quotagate.store.tables import IdempotencyKey

RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool


def run_once(
    db: Database,
    *,
    actor: str,
    key: str,
    request_sha256: str,
    work: Callable[[Session], tuple[int, dict[str, Any]]],
    stored_body: Callable[[dict[str, Any]], dict[str, Any]],
    now: datetime | None = None,
) -> Outcome:
    """Run `work` once per (actor, key). `stored_body` maps the response to what is kept for replays
    (one-time secrets must not be stored)."""
    now = now or datetime.now(UTC)
    try:
        with db.transaction(immediate=True) as session:
            previous = _previous(session, actor, key, request_sha256, now)
            if previous is not None:
                return previous
            row = IdempotencyKey(
                actor=actor, key=key, request_sha256=request_sha256, status=0, response={}, created_at=now
            )
            session.add(row)
            session.flush()
            status, body = work(session)
            row.status = status
            row.response = stored_body(body)
            return Outcome(status, body, replayed=False)
    except IntegrityError:
        # A concurrent request with the same key committed first: replay it.
        with db.read() as session:
            previous = _previous(session, actor, key, request_sha256, now)
        if previous is None:
            raise
        return previous


def _previous(session: Session, actor: str, key: str, request_sha256: str, now: datetime) -> Outcome | None:
    row = session.get(IdempotencyKey, (actor, key))
    if row is None:
        return None
    if row.created_at < now - RETENTION:
        session.delete(row)
        session.flush()
        return None
    if row.request_sha256 != request_sha256:
        raise ConflictError(f"Idempotency-Key {key!r} was already used with a different request")
    return Outcome(row.status, dict(row.response), replayed=True)
