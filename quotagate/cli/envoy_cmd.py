"""`quotagate envoy render`: the Envoy configuration for the stored configuration or a manifest file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from quotagate.cli.serve_cmd import DEFAULT_GRPC
from quotagate.errors import ConfigError
from quotagate.manifest.load import load_file
from quotagate.settings import load_settings
from quotagate.snapshot import Snapshot


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    envoy = sub.add_parser("envoy", help="Envoy configuration").add_subparsers(dest="envoy_command", required=True)
    render = envoy.add_parser(
        "render", help="print the Envoy bootstrap: listener, Check and metering filters, routes, clusters"
    )
    render.add_argument(
        "--manifest",
        metavar="FILE",
        help="Render for this manifest file without a database. Default: the configuration applied to the store.",
    )
    render.add_argument("-o", "--output", metavar="FILE", help="Write to this file instead of standard output.")
    render.add_argument(
        "--listen", default="0.0.0.0:10000", metavar="HOST:PORT", help="Where clients connect (default 0.0.0.0:10000)."
    )
    render.add_argument(
        "--grpc",
        action="append",
        metavar="ADDR",
        help=f"A `quotagate serve` gRPC address, host:port or unix:/path; repeat for several workers (default {DEFAULT_GRPC}).",
    )
    render.add_argument(
        "--check",
        action="append",
        metavar="ADDR",
        help="A `quotagate serve --check` address (host:port or unix:/path; repeat per worker, in --grpc's order): "
        "Envoy then calls Check over HTTP, the faster transport. Without it Check goes over gRPC.",
    )
    render.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="Quotagate's HTTP side (models list, admin API, dashboard); without it those paths are not routed.",
    )
    render.add_argument(
        "--admin-port", type=int, default=9901, help="Envoy's admin port, on loopback only (default 9901)."
    )
    render.add_argument(
        "--ca-file",
        metavar="FILE",
        help="CA bundle that verifies TLS upstreams (default: the system bundle, e.g. /etc/ssl/certs/ca-certificates.crt).",
    )
    render.add_argument("--format", choices=("yaml", "json"), default="yaml", help="Output format (default yaml).")
    render.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    from ext_authz.envoy_config import RenderOptions, render_envoy_config, to_yaml  # loads the Envoy types
    from ext_authz.envoy_config.options import parse_address

    snapshot = _snapshot(args.manifest)
    try:
        options = RenderOptions(
            listen=parse_address(args.listen),
            grpc_endpoints=tuple(args.grpc or [DEFAULT_GRPC]),
            check_endpoints=tuple(args.check or ()),
            http_side=parse_address(args.http) if args.http else None,
            admin_port=args.admin_port,
            max_request_bytes=load_settings().max_request_bytes,
            **({"ca_file": args.ca_file} if args.ca_file else {}),
        )
        config = render_envoy_config(snapshot, options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    text = to_yaml(config) if args.format == "yaml" else json.dumps(config, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _snapshot(manifest: str | None) -> Snapshot:
    if manifest is not None:
        from ext_authz.envoy_config import snapshot_from_manifest

        return snapshot_from_manifest(load_file(manifest))  # a ManifestError lists every problem
    from quotagate.app import open_app
    from quotagate.store.snapshot_loader import load_snapshot

    app = open_app()
    try:
        with app.db.read() as session:
            return load_snapshot(session)
    finally:
        app.close()
