"""The systems under test, each started as real processes on loopback and stopped when its block ends.

Every target answers `POST /v1/chat/completions` on `target.port` and reaches the same upstream
(bench/upstream.py). Each is a list of named components (process trees) the report accounts for.
"""

from __future__ import annotations

import base64
import copy
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
import orjson
import yaml

from bench.procs import Component
from bench.upstream import STREAM_HEADER, envoy_config
from quotagate.settings import Settings, load_settings
from tests.support.envoy import (
    RenderOptions,
    free_port,
    prepare_home,
    render_envoy_config,
    running_envoy,
    stack_manifest,
    stored_snapshot,
)

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = "bench"
KEY_ID = "demo-key"
LITELLM_MASTER_KEY = "sk-bench-master-key"
_START_TIMEOUT_S = 60.0

CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
        {"role": "user", "content": "Write one sentence about the sea at dawn, for a poem I am writing."},
    ],
    "max_tokens": 64,
    "temperature": 0.7,
}


@dataclass
class Target:
    key: str
    label: str
    port: int
    authorization: str
    components: list[Component]
    stream_model: str = "gpt-4o-mini"
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def request(self, *, stream: bool = False) -> bytes:
        body = dict(CHAT_BODY)
        headers = [
            "POST /v1/chat/completions HTTP/1.1",
            f"host: 127.0.0.1:{self.port}",
            "content-type: application/json",
            "accept: application/json",
            f"authorization: Bearer {self.authorization}",
            f"x-quotagate-upstream: {UPSTREAM}",  # plain Envoy routes on it; Check overwrites it
        ]
        if stream:
            body.update(model=self.stream_model, stream=True, stream_options={"include_usage": True})
            headers.append(f"{STREAM_HEADER}: 1")
        raw = orjson.dumps(body)
        headers.append(f"content-length: {len(raw)}")
        return ("\r\n".join(headers) + "\r\n\r\n").encode() + raw


def wait_http(url: str, process: subprocess.Popen[Any] | None = None, timeout: float = _START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def wait_port(port: int, process: subprocess.Popen[Any] | None = None, timeout: float = _START_TIMEOUT_S) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout:.0f}s")


def stop(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def process(argv: list[str], *, log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        yield proc
    finally:
        stop(proc)


# -- the upstream ---------------------------------------------------------------------------------


@dataclass
class Upstream:
    port: int
    components: list[Component]


@contextmanager
def running_upstream(work: Path, *, chunks: int, interval_ms: float) -> Iterator[Upstream]:
    with ExitStack() as stack:
        sse_port = free_port()
        sse = stack.enter_context(
            process(
                [
                    sys.executable,
                    "-m",
                    "bench.upstream",
                    "sse",
                    "--port",
                    str(sse_port),
                    "--chunks",
                    str(chunks),
                    "--interval-ms",
                    str(interval_ms),
                ],
                log=work / "upstream" / "sse.log",
            )
        )
        wait_port(sse_port, sse)
        port, admin = free_port(), free_port()
        envoy = stack.enter_context(
            running_envoy(
                envoy_config(port, admin, sse_port),
                workdir=work / "upstream",
                listen_port=port,
                admin_port=admin,
                concurrency=2,
                log_level="warn",
            )
        )
        yield Upstream(port, [Component("upstream", envoy.process.pid), Component("sse sender", sse.pid)])


def never_refuse(doc: dict[str, Any]) -> None:
    """Every limit stays (each Check reserves, each response settles) but never refuses during a run."""
    for quota in doc["organizations"][0]["quotas"]:
        quota.update({k: 10**9 for k in ("rpm_limit", "tpm_limit") if k in quota})
        if "monthly_spend_limit" in quota:
            quota["monthly_spend_limit"] = 10**6


def bench_manifest(upstream_port: int) -> str:
    def edit(doc: dict[str, Any]) -> None:
        never_refuse(doc)
        gateway = doc["deployment"]["gateway"]
        gateway["upstreams"] = [{**gateway["upstreams"][0], "name": UPSTREAM, "keepalive": 1024}]
        gateway["routes"] = [{**r, "upstream": UPSTREAM} for r in gateway["routes"] if r["provider"] == "openai"]

    return stack_manifest(f"127.0.0.1:{upstream_port}", edit=edit)


# -- plain Envoy ----------------------------------------------------------------------------------


def _filters(config: dict[str, Any]) -> list[dict[str, Any]]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters: list[dict[str, Any]] = manager["http_filters"]
    return filters


def plain(config: dict[str, Any]) -> None:
    _filters(config)[:] = [f for f in _filters(config) if f["name"] == "envoy.filters.http.router"]


def metering_streamed(config: dict[str, Any]) -> None:
    """The metering filter in STREAMED mode: Envoy waits for Quotagate's answer to every chunk."""
    (metering,) = [f for f in _filters(config) if f["name"] == "quotagate.metering"]
    metering["typed_config"]["observability_mode"] = False
    metering["typed_config"].pop("deferred_close_timeout", None)


@contextmanager
def running_plain_envoy(work: Path, settings: Settings, concurrency: int) -> Iterator[Target]:
    listen, admin = free_port(), free_port()
    options = RenderOptions(listen=("127.0.0.1", listen), grpc_endpoints=("127.0.0.1:1",), admin_port=admin)
    config = copy.deepcopy(render_envoy_config(stored_snapshot(settings), options))
    plain(config)
    # no gRPC service is called: drop the Quotagate clusters so Envoy does not health-check them
    config["static_resources"]["clusters"] = [
        c for c in config["static_resources"]["clusters"] if not c["name"].startswith("quotagate")
    ]
    with running_envoy(
        config,
        workdir=work / "envoy-plain",
        listen_port=listen,
        admin_port=admin,
        concurrency=concurrency,
        log_level="warn",
    ) as envoy:
        yield Target("envoy", "plain Envoy → upstream", listen, "none", [Component("envoy", envoy.process.pid)])


# -- Quotagate behind Envoy -----------------------------------------------------------------------


@dataclass
class Backend:
    """Where a Quotagate scenario keeps its state."""

    name: str  # embedded | pg-redis
    settings: Settings
    env: dict[str, str]
    credential: str


def embedded_backend(work: Path, upstream_port: int, name: str = "embedded") -> Backend:
    home = work / f"home-{name}"
    settings = load_settings(home=home)
    credential = prepare_home(settings, bench_manifest(upstream_port), KEY_ID)
    return Backend(name, settings, {"QUOTAGATE_HOME": str(home)}, credential)


@contextmanager
def pg_redis_backend(work: Path, upstream_port: int, *, pg_admin_url: str, redis_url: str) -> Iterator[Backend]:
    """A fresh PostgreSQL database and Redis key prefix on the local servers, dropped and deleted afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from quotagate.store.db import make_engine, upgrade

    run = uuid.uuid4().hex[:8]
    database = f"qgbench_{run}"
    prefix = f"qgbench-{run}"
    admin_url = make_url(pg_admin_url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    url = admin_url.set(database=database).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        master = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        signing = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        home = work / "home-pg-redis"
        env = {
            "QUOTAGATE_HOME": str(home),
            "QUOTAGATE_DATABASE_URL": url,
            "QUOTAGATE_REDIS_URL": redis_url,
            "QUOTAGATE_REDIS_PREFIX": prefix,
            "QUOTAGATE_MASTER_KEY": master,
            # PostgreSQL: the gateway refuses to start without the shared checkpoint signing key.
            "QUOTAGATE_LEDGER_SIGNING_KEY": signing,
        }
        settings = load_settings(
            home=home,
            database_url=url,
            redis_url=redis_url,
            redis_prefix=prefix,
            master_key=master,
            ledger_signing_key=signing,
        )
        credential = prepare_home(settings, bench_manifest(upstream_port), KEY_ID)
        yield Backend("pg-redis", settings, env, credential)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
        finally:
            client.close()


@dataclass
class Serve:
    grpc: tuple[str, ...]
    check: tuple[str, ...]
    component: Component
    process: subprocess.Popen[bytes]
    log: Path  # its standard error: the access log, one JSON line per metered or refused request


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_")}
    env.update(extra)
    return env


@contextmanager
def running_serve(work: Path, backend: Backend, *, workers: int, check: str, tag: str) -> Iterator[Serve]:
    """`quotagate serve` on fixed loopback ports; `check`: 'http' (Check over HTTP) or 'grpc'."""
    grpc_base, check_base = _port_block(workers), _port_block(workers)
    argv = [sys.executable, "-m", "quotagate", "serve", "--grpc", f"127.0.0.1:{grpc_base}", "--grace", "3"]
    if check == "http":
        argv += ["--check", f"127.0.0.1:{check_base}"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    log = work / f"serve-{tag}.log"
    with process(argv, log=log, env=_clean_env(backend.env)) as proc:
        for i in range(workers):
            wait_port(grpc_base + i, proc)
            if check == "http":
                wait_port(check_base + i, proc)
        yield Serve(
            tuple(f"127.0.0.1:{grpc_base + i}" for i in range(workers)),
            tuple(f"127.0.0.1:{check_base + i}" for i in range(workers)) if check == "http" else (),
            Component("quotagate", proc.pid),
            proc,
            log,
        )


def _port_block(n: int) -> int:
    """n consecutive free ports (best effort: checked free now)."""
    import socket

    for _ in range(200):
        base = free_port()
        if base + n > 65000:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


@contextmanager
def running_gateway_envoy(
    work: Path,
    backend: Backend,
    serve: Serve,
    *,
    key: str,
    label: str,
    check_over_http: bool = False,
    adapt: Callable[[dict[str, Any]], None] | None = None,
    concurrency: int = 2,
) -> Iterator[Target]:
    """Envoy as `quotagate envoy render` configures it (Check over gRPC unless told otherwise) for `serve`."""
    listen, admin = free_port(), free_port()
    options = RenderOptions(
        listen=("127.0.0.1", listen),
        grpc_endpoints=serve.grpc,
        check_endpoints=serve.check if check_over_http else (),
        admin_port=admin,
        max_request_bytes=backend.settings.max_request_bytes,
    )
    config = copy.deepcopy(render_envoy_config(stored_snapshot(backend.settings), options))
    if adapt is not None:
        adapt(config)
    with running_envoy(
        config, workdir=work / f"envoy-{key}", listen_port=listen, admin_port=admin, concurrency=concurrency,
        log_level="warn",
    ) as envoy:  # fmt: skip
        _wait_healthy(envoy.admin_url)
        yield Target(
            key, label, listen, backend.credential, [Component("envoy", envoy.process.pid), serve.component],
            extra={"envoy_admin": envoy.admin_url, "serve_log": serve.log},
        )  # fmt: skip


def _wait_healthy(admin_url: str, timeout: float = 20.0) -> None:
    """Until Envoy's health checks found every Quotagate endpoint healthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{admin_url}/clusters").text
        rows = [line for line in text.splitlines() if line.startswith("quotagate") and "::health_flags::" in line]
        if rows and all(line.endswith("::healthy") for line in rows):
            return
        time.sleep(0.1)
    raise RuntimeError(f"Envoy did not see Quotagate healthy within {timeout:.0f}s")


# -- mitmproxy + the addon ------------------------------------------------------------------------


@contextmanager
def running_mitmdump(work: Path, backend: Backend, upstream: Upstream) -> Iterator[Target]:
    port = free_port()
    mitmdump = str(Path(sys.executable).with_name("mitmdump"))
    argv = [
        mitmdump,
        "-q",
        "-s",
        str(REPO / "addons" / "quotagate_addon.py"),
        "--set",
        f"confdir={work / 'mitmproxy'}",
        "--set",
        "connection_strategy=lazy",
        "--set",
        "listen_host=127.0.0.1",
        "--set",
        "termlog_verbosity=warn",
        "--mode",
        f"reverse:http://127.0.0.1:{upstream.port}@{port}",
    ]
    with process(argv, log=work / "mitmdump.log", env=_clean_env(backend.env)) as proc:
        wait_port(port, proc)
        yield Target(
            "mitmproxy", "mitmproxy + Quotagate addon", port, backend.credential, [Component("mitmdump", proc.pid)]
        )


# -- LiteLLM --------------------------------------------------------------------------------------

LITELLM_VERSION = "1.106.10"
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "1",
    "LITELLM_LOG": "ERROR",
}


def litellm_config(upstream_port: int) -> dict[str, Any]:
    params = {"model": "openai/gpt-4o-mini", "api_key": "sk-bench-upstream"}
    return {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {**params, "api_base": f"http://127.0.0.1:{upstream_port}/v1"},
            },
            # LiteLLM does not forward client headers: its streams reach the SSE sender by path.
            {
                "model_name": "gpt-4o-mini-stream",
                "litellm_params": {**params, "api_base": f"http://127.0.0.1:{upstream_port}/stream/v1"},
            },
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        "litellm_settings": {"num_retries": 0, "request_timeout": 60},
    }


class LiteLLM:
    """LiteLLM's proxy, started early (its start-up takes 15-30 s) and waited for when needed."""

    def __init__(self, work: Path, venv: Path, upstream: Upstream) -> None:
        self.port = free_port()
        config = work / "litellm.yaml"
        config.write_text(yaml.safe_dump(litellm_config(upstream.port)))
        env = {**os.environ, **LITELLM_ENV}
        env.pop("VIRTUAL_ENV", None)
        self.log = work / "litellm.log"
        self._out = self.log.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                str(venv / "bin" / "litellm"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                "1",
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
        self.startup_s: float | None = None

    def ready(self, timeout: float = 120.0) -> Target:
        wait_http(f"http://127.0.0.1:{self.port}/health/liveliness", self.proc, timeout)
        if self.startup_s is None:
            self.startup_s = time.monotonic() - self.started
            self._warm(deadline=time.monotonic() + timeout)
        return Target(
            "litellm",
            f"LiteLLM {LITELLM_VERSION} proxy (master key)",
            self.port,
            LITELLM_MASTER_KEY,
            [Component("litellm", self.proc.pid)],
            stream_model="gpt-4o-mini-stream",
        )

    def _warm(self, *, deadline: float) -> None:
        """Its first requests import and build its router (~2 s each, seen here): a saturation run that starts
        then measures nothing for seconds. Send requests one by one until three in a row answer promptly."""
        url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 8}
        headers = {"authorization": f"Bearer {LITELLM_MASTER_KEY}"}
        prompt = 0
        while prompt < 3:
            if time.monotonic() > deadline:
                raise RuntimeError(f"LiteLLM did not answer promptly before the deadline; log:\n{self.log_tail()}")
            started = time.monotonic()
            answered = httpx.post(url, json=body, headers=headers, timeout=30).status_code == 200
            prompt = prompt + 1 if answered and time.monotonic() - started < 0.5 else 0

    def stop(self) -> None:
        stop(self.proc)
        self._out.close()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
