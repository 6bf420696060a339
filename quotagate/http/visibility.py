"""Filters that name an object: the object must be visible to the caller, else 404.

A list filtered by another organization's project, client or key answers 404, as reading that object
does: to an organization admin, what belongs to another organization does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quotagate.errors import NotFoundError
from quotagate.store import tenancy_repo
from quotagate.store.api_keys_repo import get_key


def require_visible(
    session: Any,
    scope: str | None,
    *,
    project_id: str | None = None,
    client_id: str | None = None,
    key_id: str | None = None,
) -> None:
    """NotFoundError unless each given id names an object within `scope` (None: any organization)."""
    if project_id is not None:
        tenancy_repo.get_row(session, tenancy_repo.PROJECT, project_id, scope)
    if client_id is not None:
        tenancy_repo.get_row(session, tenancy_repo.CLIENT, client_id, scope)
    if key_id is not None:
        get_key(session, key_id, scope)


def require_scope_visible(session: Any, scope: str | None, scope_type: str | None, scope_id: str) -> None:
    """A quota scope: an organization (id or slug), project, client or key id; of `scope_type` when given."""
    lookups: dict[str, Callable[[], object]] = {
        "organization": lambda: tenancy_repo.find_org(session, scope_id, scope),
        "project": lambda: tenancy_repo.get_row(session, tenancy_repo.PROJECT, scope_id, scope),
        "client": lambda: tenancy_repo.get_row(session, tenancy_repo.CLIENT, scope_id, scope),
        "key": lambda: get_key(session, scope_id, scope),
    }
    for kind, lookup in lookups.items():
        if scope_type in (None, kind):
            try:
                lookup()
                return
            except NotFoundError:
                continue
    raise NotFoundError(f"no {scope_type or 'scope'} {scope_id!r}")
