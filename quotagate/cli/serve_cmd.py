"""`quotagate serve`: the gRPC services Envoy calls (Check, Process, health) and the HTTP side, until SIGTERM/SIGINT.

With `--workers N` it supervises N such processes, each on its own ports (Envoy balances connections, not
requests, so one shared port would balance badly); Envoy lists every worker as an endpoint. A worker that
dies is restarted (quotagate/cli/supervisor.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
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
        "--check",
        metavar="ADDR",
        help="Also answer ext_authz Check over plain HTTP here (host:port or unix:/path), for Envoy's http_service: "
        "the same decision as the gRPC Check at a fraction of its round trip (render Envoy with --check). "
        "Unset: Check over gRPC only.",
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
        help="Run N worker processes; worker i listens on the gRPC, Check and HTTP ports plus i (or unix:PATH.i). "
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
    from quotagate.metering.access_log import configure_access_log

    configure_access_log(settings.access_log_path)  # bare JSON lines, not the format above
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.workers > 1:
        return _supervise(args, settings)
    import uvloop  # libuv's event loop roughly halves a gRPC call's round trip on grpc.aio (envoy/README.md)

    uvloop.run(_run(settings, args.grpc, args.http, args.grace, args.check))
    return 0


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    from quotagate.cli.supervisor import Supervisor, require_shared_backends

    require_shared_backends(settings)
    argvs = []
    for i in range(args.workers):
        argv = [sys.executable, "-m", "quotagate", "serve", "--grpc", worker_address(args.grpc, i)]
        argv += ["--grace", str(args.grace)]
        if args.check:
            argv += ["--check", worker_address(args.check, i)]
        if args.http:
            argv += ["--http", worker_address(args.http, i)]
        argvs.append(argv)
    return Supervisor(argvs, stop_timeout_s=args.grace + 15).run()


async def _run(settings: Settings, address: str, http: str | None, grace_s: float, check: str | None = None) -> None:
    from ext_authz.server import serve  # the gRPC stack loads only for this command
    from quotagate.runtime import open_runtime

    runtime = open_runtime(settings)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http_task = _start_http(runtime, http) if http else None

    check_bound: list[str] = []

    def ready(bound: str) -> None:
        line = f"quotagate serve: gRPC listening on {bound}"
        line += "".join(f", Check (HTTP) on {c}" for c in check_bound) + (f", HTTP on {http}" if http else "")
        print(line, flush=True)

    try:
        await serve(
            runtime,
            address,
            stop=stop,
            grace_s=grace_s,
            on_ready=ready,
            check_addr=check,
            on_check_ready=check_bound.append,
        )
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
