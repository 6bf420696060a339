"""Keyset pagination: ``WHERE key > after ORDER BY key LIMIT n``, stable while rows are added."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

MAX_PAGE = 500
E = TypeVar("E")
K = TypeVar("K")


def keyset_page(
    session: Session, stmt: Select[E], key: InstrumentedAttribute[K], after: K | None, limit: int
) -> tuple[list[E], K | None]:
    """Up to `limit` entities after the key `after` (None: from the start), and the key to continue after
    (None: no more). `key` must be a unique column of the selected entity."""
    limit = max(1, min(limit, MAX_PAGE))
    if after is not None:
        stmt = stmt.where(key > after)
    rows = list(session.scalars(stmt.order_by(key).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last: Any = getattr(rows[-1], key.key)
    return rows, last
