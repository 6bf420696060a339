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
import re
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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


# -- one limit shared by every worker


def rpm_limit(limit: int) -> Callable[[dict[str, Any]], None]:
    """Manifest edit: demo-key may make `limit` requests a minute."""

    def edit(doc: dict[str, Any]) -> None:
        doc["organizations"][0]["quotas"].append({"scope_type": "key", "key_id": "demo-key", "rpm_limit": limit})

    return edit


def same_minute_ahead(seconds: float) -> None:
    """Wait out a minute boundary closer than `seconds`: an RPM window must hold the whole exchange."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.1)


HELLO = [{"role": "user", "content": "Hello"}]


def chat_statuses(url: str, credential: str, count: int, messages: list[dict[str, str]] = HELLO) -> list[int]:
    """`count` chat requests to the gateway at `url`, each on a connection of its own (Envoy balances connections
    over the workers), and their statuses."""
    body = {"model": "gpt-4o-mini", "messages": messages}
    headers = {"authorization": f"Bearer {credential}"}
    return [httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers).status_code for _ in range(count)]


def decisions(metrics_url: str) -> int:
    """How many Check decisions the worker serving `metrics_url` made (0 before its first)."""
    found = re.search(r"^quotagate_decision_seconds_count (\S+)$", httpx.get(metrics_url).text, re.M)
    return int(float(found.group(1))) if found else 0
