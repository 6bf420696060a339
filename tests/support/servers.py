"""Access to the real PostgreSQL and Redis the suite runs against.

`QUOTAGATE_TEST_DATABASE_URL` / `QUOTAGATE_TEST_REDIS_URL` name the servers (defaults: the local ones).
Each test run works in its own databases and key prefix. An unreachable server skips the tests that
need it with a loud reason, except under CI=true, where it fails them.
"""

from __future__ import annotations

import os
import uuid

import pytest

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
RUN_ID = uuid.uuid4().hex[:8]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, url: str, exc: BaseException) -> None:
    message = f"{what} at {url} is unreachable ({exc.__class__.__name__}: {exc}); set the URL variable or start it"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {message}")


def postgres_admin_url() -> str:
    return os.environ.get("QUOTAGATE_TEST_DATABASE_URL", DEFAULT_PG)


def redis_url() -> str:
    return os.environ.get("QUOTAGATE_TEST_REDIS_URL", DEFAULT_REDIS)


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Remove a test run's keys from the shared Redis (SCAN is fine in tests, never on the hot path)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
