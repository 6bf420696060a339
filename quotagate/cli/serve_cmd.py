"""`quotagate serve`: the gRPC services Envoy calls (Check, Process, health) until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from quotagate.settings import Settings, load_settings

DEFAULT_GRPC = "127.0.0.1:50051"
DEFAULT_GRACE_S = 30.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gateway process Envoy calls: ext_authz Check, ext_proc, health")
    serve.add_argument(
        "--grpc",
        default=DEFAULT_GRPC,
        metavar="ADDR",
        help=f"Address of the gRPC services, host:port or unix:/path; port 0 picks a free one (default {DEFAULT_GRPC}).",
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


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop  # libuv's event loop roughly halves a gRPC call's round trip on grpc.aio (envoy/README.md)

    uvloop.run(_run(settings, args.grpc, args.grace))
    return 0


async def _run(settings: Settings, address: str, grace_s: float) -> None:
    from ext_authz.server import serve  # the gRPC stack loads only for this command
    from quotagate.runtime import open_runtime

    runtime = open_runtime(settings)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready(bound: str) -> None:
        print(f"quotagate serve: gRPC listening on {bound}", flush=True)  # harnesses read this line

    try:
        await serve(runtime, address, stop=stop, grace_s=grace_s, on_ready=ready)
    finally:
        await runtime.stop()  # drains the usage spool into the database
        print("quotagate serve: stopped", file=sys.stderr, flush=True)
