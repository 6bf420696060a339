"""Entry point of the `quotagate` command."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from quotagate.errors import QuotagateError

# Each module exposes register(subparsers) and sets `func` on its parsers; order is the help order.
COMMAND_MODULES = (
    "quotagate.cli.up_cmd",
    "quotagate.cli.manifest_cmd",
    "quotagate.cli.keys_cmd",
    "quotagate.cli.admin_token_cmd",
    "quotagate.cli.upstream_cmd",
    "quotagate.cli.usage_cmd",
    "quotagate.cli.audit_cmd",
    "quotagate.cli.alerts_cmd",
    "quotagate.cli.serve_cmd",
    "quotagate.cli.envoy_cmd",
    "quotagate.cli.db_cmd",
    "quotagate.cli.dev_cmd",
    "quotagate.fake_provider.cli",
    "quotagate.cli.config_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quotagate",
        description="LLM API gateway: scoped keys, limits before dispatch, exact metering.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except QuotagateError as exc:
        print(f"quotagate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
