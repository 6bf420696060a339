"""Cursor pagination: ``?limit=&cursor=``; answers ``{"data": [...], "next_cursor": "..." | null}``."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from quotagate.http.errors import ApiError, Problem
from quotagate.store.paging_repo import MAX_PAGE

T = TypeVar("T")
K = TypeVar("K", str, int)

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"items per page (1-{MAX_PAGE})")]
Cursor = Annotated[
    str | None, Query(max_length=600, description="`next_cursor` of the previous page; omit for the first page")
]


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


def encode(key: str | int | None) -> str | None:
    if key is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode(cursor: str | None, kind: type[K]) -> K | None:
    """The key a cursor continues after; a malformed cursor is a 422 like any other bad parameter."""
    if cursor is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if type(value) is not kind:
        raise ApiError(
            422,
            "validation_failed",
            "The request is invalid.",
            details=[Problem(path="query.cursor", message="invalid cursor")],
        )
    result: K = value
    return result
