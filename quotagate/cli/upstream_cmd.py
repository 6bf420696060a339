"""`quotagate upstream set-key PROVIDER --from-env VAR | --from-stdin` and `upstream clear-key PROVIDER`."""

from __future__ import annotations

import argparse
import os
import sys

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.cli.common import actor
from quotagate.errors import ConfigError
from quotagate.store.credentials_repo import clear_provider_key, set_provider_key


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("upstream", help="provider credentials").add_subparsers(dest="upstream_command", required=True)
    setkey = up.add_parser(
        "set-key",
        help="store or rotate a provider key, encrypted at rest; every process uses it within seconds",
    )
    setkey.add_argument("provider", choices=[p.value for p in Provider])
    source = setkey.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-env", metavar="VAR", help="read the key from this environment variable")
    source.add_argument("--from-stdin", action="store_true", help="read the key from standard input")
    setkey.set_defaults(func=_set_key)
    clear = up.add_parser(
        "clear-key",
        help="forget the stored key: the manifest's env:VAR reference for the provider is used again",
    )
    clear.add_argument("provider", choices=[p.value for p in Provider])
    clear.set_defaults(func=_clear_key)


def _set_key(args: argparse.Namespace) -> int:
    if args.from_env:
        secret = os.environ.get(args.from_env)
        if not secret:
            raise ConfigError(f"environment variable {args.from_env} is empty or unset")
    else:
        secret = sys.stdin.readline()
    app = open_app()
    try:
        with app.db.transaction() as session:
            version = set_provider_key(session, app.secret_box(), Provider(args.provider), secret, actor=actor())
    finally:
        app.close()
    print(f"{args.provider}: key stored (version {version}); the secret is not shown")
    return 0


def _clear_key(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        with app.db.transaction() as session:
            var = clear_provider_key(session, Provider(args.provider), actor=actor())
    finally:
        app.close()
    print(f"{args.provider}: stored key removed; the key is read from ${var} again")
    return 0
