"""The scaled-out shape for fault tests: a fake provider (its own process), N `quotagate serve` processes sharing
one home, PostgreSQL and Redis, behind one real Envoy.

    with running_cluster(tmp_path, database_url=..., redis_url=..., workers=2, edit=...) as c:
        c.post("/v1/chat/completions", json=..., credential=c.credential("demo-key"))
        c.kill_worker(0)                     # SIGKILL: no drain, no spool flush
        c.redis_keys("r:*")                  # what Redis holds under this cluster's prefix

Everything the processes write (their logs, Envoy's log and access log) stays under the work directory, so a
test can scan it afterwards (tests/security does, for secrets).
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import func, select

from quotagate.app import App, open_app
from quotagate.fake_provider.config import FakeConfig
from quotagate.fake_provider.testing import FakeProvider, running_fake_provider
from quotagate.settings import Settings, load_settings
from quotagate.store import keys_repo
from quotagate.store.admin_tokens_repo import issue_admin_token
from quotagate.store.tables import UsageEvent
from tests.support.envoy import (
    EnvoyProcess,
    RenderOptions,
    free_port,
    prepare_home,
    render_envoy_config,
    running_envoy,
    stack_manifest,
    stored_snapshot,
)

_START_TIMEOUT_S = 60.0


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Worker:
    index: int
    grpc: str
    http: str
    process: subprocess.Popen[str]
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def metrics(self) -> str:
        return httpx.get(self.http_url + "/metrics", timeout=10).text

    def rss_kb(self) -> int:
        return proc_rss_kb(self.process.pid)

    def fds(self) -> int:
        return proc_fds(self.process.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    workdir: Path
    settings: Settings  # what the test process uses to read the shared store
    env: dict[str, str]  # the QUOTAGATE_* environment of every worker (and of CLI calls)
    fake: FakeProvider
    workers: list[Worker]
    envoy: EnvoyProcess
    credentials: dict[str, str]
    admin_token: str
    redis_url: str
    prefix: str
    _stack: ExitStack = field(repr=False, default_factory=ExitStack)

    @property
    def url(self) -> str:
        return self.envoy.url

    def credential(self, key_id: str) -> str:
        return self.credentials[key_id]

    # -- the store, read directly
    @contextmanager
    def app(self) -> Iterator[App]:
        app = open_app(self.settings)
        try:
            yield app
        finally:
            app.close()

    def count_events(self, *where: Any) -> int:
        with self.app() as app, app.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(UsageEvent).where(*where)) or 0)

    def wait_events(self, expected: int, *where: Any, timeout_s: float = 60.0) -> int:
        """Wait until at least `expected` usage events match `where` (the workers write in the background)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.count_events(*where)
            if found >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def issue_key(self, key_id: str) -> str:
        with self.app() as app, app.db.transaction(immediate=True) as session:
            credential = str(keys_repo.issue_key(session, app.hasher, key_id, actor="test"))
        self.credentials[key_id] = credential
        return credential

    # -- Redis under this cluster's prefix
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def redis_keys(self, pattern: str = "*") -> list[str]:
        client = self.redis()
        try:
            return sorted(k.decode() for k in client.scan_iter(match=f"{self.prefix}:{pattern}", count=1000))
        finally:
            client.close()

    def outstanding_reservations(self) -> list[str]:
        """Reservation hashes still in Redis (a settled reservation is deleted; a settled claim leaves `done`)."""
        client = self.redis()
        try:
            return [k for k in self.redis_keys("*:r:*") if not client.hexists(k, "done")]
        finally:
            client.close()

    # -- workers
    def start_worker(self, index: int | None = None) -> Worker:
        index = len(self.workers) if index is None else index
        grpc, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        log_path = self.workdir / f"worker-{index}-{len(self.workers)}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "quotagate", "serve", "--grpc", grpc, "--http", http, "--grace", "5"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self.env,
            )
        worker = Worker(index, grpc, http, process, log_path)
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: Worker) -> None:
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)

    def stop_worker(self, worker: Worker) -> int:
        if worker.alive:
            worker.process.send_signal(signal.SIGTERM)
            try:
                return worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        return worker.process.returncode

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "quotagate", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def logs(self) -> str:
        """Every log this cluster wrote: workers' (Quotagate logging, access lines), Envoy's log and access log."""
        parts = [w.log() for w in self.workers]
        for path in (self.envoy.log_path, self.envoy.access_log_path):
            parts.append(path.read_text(errors="replace") if path.exists() else "")
        return "\n".join(parts)


def _wait_ready(worker: Worker) -> None:
    line = worker.process.stdout.readline() if worker.process.stdout else ""
    if "listening on" not in line:
        worker.process.kill()
        raise RuntimeError(f"quotagate serve did not start: {line!r}\n{worker.log()[-3000:]}")
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(worker.http_url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"worker {worker.index} was not ready\n{worker.log()[-3000:]}")


def worker_env(settings_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_") or k.startswith("QUOTAGATE_TEST_")}
    env.update(settings_env)
    return env


@contextmanager
def running_cluster(
    workdir: Path,
    *,
    database_url: str,
    redis_url: str,
    workers: int = 2,
    edit: Callable[[dict[str, Any]], None] | None = None,
    key_ids: tuple[str, ...] = ("demo-key",),
    fake_config: FakeConfig | None = None,
    envoy_options: dict[str, Any] | None = None,
    **settings: str,
) -> Iterator[Cluster]:
    """Fake provider + `workers` x `quotagate serve` + Envoy over `database_url` (migrated) and `redis_url`.

    `settings`: extra QUOTAGATE_* values by field name (e.g. reservation_ttl_s="10")."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = f"qgrel-{uuid.uuid4().hex[:10]}"
    values = {
        "home": str(workdir / "home"),
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "master_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "ledger_signing_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "config_refresh_ms": "100",
        **settings,
    }
    env = worker_env({f"QUOTAGATE_{k.upper()}": v for k, v in values.items()})
    config = load_settings(**values)
    with ExitStack() as stack:
        fake = stack.enter_context(running_fake_provider(config=fake_config, in_subprocess=True))
        manifest = stack_manifest(fake.base_url.removeprefix("http://"), edit=edit)
        credentials = {key_ids[0]: prepare_home(config, manifest, key_ids[0])}
        app = open_app(config)
        try:
            with app.db.transaction(immediate=True) as session:
                for key_id in key_ids[1:]:
                    credentials[key_id] = str(keys_repo.issue_key(session, app.hasher, key_id, actor="test"))
                _, token = issue_admin_token(session, app.hasher, organization=None, name="reliability", actor="test")
        finally:
            app.close()
        cluster = Cluster(
            workdir,
            config,
            env,
            fake,
            [],
            None,
            credentials,
            str(token),
            redis_url,
            prefix,  # type: ignore[arg-type]
        )
        stack.callback(_cleanup_redis, redis_url, prefix)
        started = [cluster.start_worker(i) for i in range(workers)]
        stack.callback(lambda: [cluster.stop_worker(w) for w in cluster.workers])
        for worker in started:
            _wait_ready(worker)
        listen, admin = free_port(), free_port()
        host, _, port = started[0].http.rpartition(":")
        options = RenderOptions(
            listen=("127.0.0.1", listen),
            grpc_endpoints=tuple(w.grpc for w in started),
            http_side=(host, int(port)),
            admin_port=admin,
            max_request_bytes=config.max_request_bytes,
            **(envoy_options or {}),
        )
        cluster.envoy = stack.enter_context(
            running_envoy(
                render_envoy_config(stored_snapshot(config), options),
                workdir=workdir / "envoy",
                listen_port=listen,
                admin_port=admin,
            )
        )
        yield cluster


def _cleanup_redis(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # a throwaway Redis that is already gone
    finally:
        client.close()
