"""`quotagate serve`: the gRPC services Envoy calls (Check, Process, health) and the HTTP side, until SIGTERM/SIGINT.

With `--workers N` it supervises N such processes, each on its own ports (Envoy balances connections, not
requests, so one shared port would balance badly); Envoy lists every worker as an endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from quotagate.errors import ConfigError
from quotagate.settings import Settings, load_settings

if TYPE_CHECKING:
    from quotagate.runtime import GatewayRuntime

DEFAULT_GRPC = "127.0.0.1:50051"
DEFAULT_GRACE_S = 30.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gateway process Envoy calls: ext_authz Check, ext_proc, health, HTTP")
    serve.add_argument(
        "--grpc",
        default=DEFAULT_GRPC,
        metavar="ADDR",
        help=f"Address of the gRPC services, host:port or unix:/path; port 0 picks a free one (default {DEFAULT_GRPC}).",
    )
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="Address of the HTTP side: admin and portal API, /v1/models, dashboard, /metrics, /healthz, /readyz.",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="Run N worker processes; worker i listens on the gRPC and HTTP ports plus i (or unix:PATH.i). "
        "Needs QUOTAGATE_REDIS_URL and a PostgreSQL QUOTAGATE_DATABASE_URL, which the workers share.",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        metavar="SECONDS",
        help="On SIGTERM/SIGINT, how long in-flight requests and streams may take to finish before they are cut "
        f"(their usage is still recorded, as estimated). Default {DEFAULT_GRACE_S:.0f}.",
    )
    serve.set_defaults(func=_serve)


def worker_address(address: str, index: int) -> str:
    """The address of worker `index`: the port plus index, or the unix path with `.index`."""
    if address.startswith("unix:"):
        return f"{address}.{index}"
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        raise ConfigError(f"--workers needs fixed ports, got {address!r}")
    return f"{host}:{int(port) + index}"


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.workers > 1:
        return _supervise(args, settings)
    import uvloop  # libuv's event loop roughly halves a gRPC call's round trip on grpc.aio (envoy/README.md)

    uvloop.run(_run(settings, args.grpc, args.http, args.grace))
    return 0


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    if settings.redis_url is None or settings.effective_database_url.startswith("sqlite"):
        raise ConfigError(
            "--workers > 1 needs shared backends: set QUOTAGATE_REDIS_URL (counters) and a PostgreSQL "
            "QUOTAGATE_DATABASE_URL (config, usage, ledger); the embedded SQLite + in-process counters serve one process"
        )
    children = []
    for i in range(args.workers):
        argv = [
            sys.executable,
            "-m",
            "quotagate",
            "serve",
            "--grpc",
            worker_address(args.grpc, i),
            "--grace",
            str(args.grace),
        ]
        if args.http:
            argv += ["--http", worker_address(args.http, i)]
        children.append(subprocess.Popen(argv))
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return 0 if stopping or all(code == 0 for code in codes) else 1


async def _run(settings: Settings, address: str, http: str | None, grace_s: float) -> None:
    from ext_authz.server import serve  # the gRPC stack loads only for this command
    from quotagate.runtime import open_runtime

    runtime = open_runtime(settings)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http_task = _start_http(runtime, http) if http else None

    def ready(bound: str) -> None:
        print(f"quotagate serve: gRPC listening on {bound}" + (f", HTTP on {http}" if http else ""), flush=True)

    try:
        await serve(runtime, address, stop=stop, grace_s=grace_s, on_ready=ready)
    finally:
        if http_task is not None:
            http_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await http_task
        await runtime.stop()  # drains the usage spool into the database
        print("quotagate serve: stopped", file=sys.stderr, flush=True)


def _start_http(runtime: GatewayRuntime, address: str) -> asyncio.Task[None]:
    from quotagate.http.app import build_http_app, serve_http

    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--http must be HOST:PORT, got {address!r}")
    return asyncio.create_task(serve_http(build_http_app(runtime), host.strip("[]") or "127.0.0.1", int(port)))
