"""``quotagate fake-provider``: run the fake provider from the command line.

Every ``x-fake-*`` header has a server-wide option of the same name (``x-fake-ttft-ms`` is
``--ttft-ms``); a request's headers override the server's options.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from quotagate.fake_provider.behaviour import FIELD_NAMES, BadFakeHeader, Behaviour, header_name, parse_value
from quotagate.fake_provider.config import DEFAULT_MODELS, FakeConfig
from quotagate.fake_provider.server import bind, run

_HELP = "An OpenAI- and Anthropic-compatible fake LLM provider for demos, tests and benchmarks."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--tls-cert", help="PEM certificate file: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key file for --tls-cert")
    parser.add_argument("--record", type=int, default=100, help="requests kept for GET /_fake/requests (0: off)")
    parser.add_argument(
        "--api-key", action="append", default=[], help="accept only this credential (repeatable; default: any)"
    )
    parser.add_argument("--model", action="append", default=[], help="model listed by GET /v1/models (repeatable)")
    knobs = parser.add_argument_group("reply behaviour (per-request header: x-fake-NAME)")
    defaults = Behaviour()
    for name in FIELD_NAMES:
        knobs.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"fake_{name}",
            metavar="VALUE",
            help=f"default {getattr(defaults, name)!r}; header {header_name(name)}",
        )


def config_from_args(args: argparse.Namespace) -> FakeConfig:
    overrides: dict[str, Any] = {}
    for name in FIELD_NAMES:
        text = getattr(args, f"fake_{name}", None)
        if text is not None:
            overrides[name] = parse_value(name, text)
    return FakeConfig(
        defaults=Behaviour().with_overrides(overrides),
        record_limit=args.record,
        api_keys=frozenset(args.api_key),
        models=tuple(args.model) or DEFAULT_MODELS,
    )


def config_to_args(config: FakeConfig) -> list[str]:
    """The options that rebuild ``config`` in another process (``python -m quotagate.fake_provider``)."""
    argv = ["--record", str(config.record_limit)]
    for key in sorted(config.api_keys):
        argv += ["--api-key", key]
    for model in config.models:
        argv += ["--model", model]
    defaults = Behaviour()
    for field in dataclasses.fields(Behaviour):
        value = getattr(config.defaults, field.name)
        if value != getattr(defaults, field.name):
            argv += ["--" + field.name.replace("_", "-"), str(value)]
    return argv


def serve_command(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except BadFakeHeader as exc:
        print(f"fake-provider: {exc}", file=sys.stderr)
        return 2
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    scheme = "https" if args.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    # Tests and scripts read this line to learn the port when started with --port 0.
    print(f"fake provider listening on {scheme}://{shown}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        run(tls_cert=args.tls_cert, tls_key=args.tls_key, config=config, sock=sock)
    return 0


def register(subparsers: Any) -> None:
    """Add ``fake-provider`` to an argparse subparsers object (the ``quotagate`` CLI's convention)."""
    parser = subparsers.add_parser("fake-provider", help=_HELP, description=_HELP)
    add_arguments(parser)
    parser.set_defaults(func=serve_command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quotagate.fake_provider", description=_HELP)
    add_arguments(parser)
    return serve_command(parser.parse_args(argv))
