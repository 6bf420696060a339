"""Settings for gateway processes that share PostgreSQL and Redis, as `serve --workers N` and `up --workers N` run.

    with shared_backends(tmp_path, pg_databases) as shared:
        prepare_home(shared.settings, manifest, "demo-key")      # the test process writes the shared store
        subprocess.Popen([... "serve", "--workers", "2"], env=shared.env)

A fresh migrated database (tests/support/pg.py) and a fresh Redis key prefix per use, removed afterwards;
the master and ledger signing keys every process of a PostgreSQL deployment must share.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from quotagate.settings import Settings, load_settings
from tests.reliability.conftest import require_redis
from tests.support.pg import PgDatabases
from tests.support.servers import delete_redis_prefix


@dataclass(frozen=True)
class SharedBackends:
    settings: Settings  # what the test process uses to read and write the shared store
    env: dict[str, str]  # the environment of every gateway process (and CLI call)


@contextmanager
def shared_backends(workdir: Path, pg: PgDatabases) -> Iterator[SharedBackends]:
    redis_url = require_redis()
    prefix = f"qgw-{uuid.uuid4().hex[:10]}"
    values = {
        "home": str(workdir / "home"),
        "database_url": pg.new_database(),
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "master_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "ledger_signing_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "config_refresh_ms": "100",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_") or k.startswith("QUOTAGATE_TEST_")}
    env.update({f"QUOTAGATE_{k.upper()}": v for k, v in values.items()})
    try:
        yield SharedBackends(load_settings(**values), env)
    finally:
        delete_redis_prefix(redis_url, prefix)


def free_ports_in_a_row(count: int, attempts: int = 50) -> int:
    """The first of `count` consecutive free loopback ports (workers listen on a base port plus their index)."""
    for _ in range(attempts):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            base = int(first.getsockname()[1])
        if base + count > 65535:
            continue
        if all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
