"""Fixtures of the reliability suite: the test PostgreSQL and Redis, and the bounded/soak switch."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.support.pg import PgDatabases
from tests.support.servers import redis_url, unavailable

SOAK = os.environ.get("QUOTAGATE_SOAK") == "1"


def scaled(ci: Any, soak: Any) -> Any:
    """The bounded figure CI runs, or the long one under QUOTAGATE_SOAK=1."""
    return soak if SOAK else ci


def require_redis() -> str:
    """The test Redis URL; skips (fails under CI=true) when it does not answer."""
    import redis

    url = redis_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except Exception as exc:
        unavailable("Redis", url, exc)
    finally:
        client.close()
    return url


@pytest.fixture
def shared_redis() -> str:
    return require_redis()


@pytest.fixture
def pg_url(pg_databases: PgDatabases) -> str:
    """A fresh, migrated PostgreSQL database on the test server."""
    return pg_databases.new_database()


def org(
    slug: str, *, quotas: list[dict[str, Any]], key_ids: tuple[str, ...] = (), project_quotas: bool = True
) -> dict[str, Any]:
    """A manifest organization `org-<slug>` with one project `proj-<slug>`, one client and the given keys."""
    return {
        "organization_id": f"org-{slug}",
        "organization_slug": slug,
        "organization_name": f"{slug.title()} Org",
        "quotas": quotas,
        "projects": [
            {
                "project_id": f"proj-{slug}",
                "project_slug": f"{slug}-app",
                "project_name": f"{slug} app",
                "clients": [
                    {
                        "client_id": f"client-{slug}",
                        "client_name": f"{slug} client",
                        "api_keys": [{"key_id": k} for k in (key_ids or (f"{slug}-key",))],
                    }
                ],
            }
        ],
    }
