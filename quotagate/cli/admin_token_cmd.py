"""`quotagate admin-token issue|list|revoke`: tokens for the admin HTTP API."""

from __future__ import annotations

import argparse
import sys

from quotagate.app import open_app
from quotagate.cli.common import actor, print_json, print_table
from quotagate.store.admin_tokens_repo import issue_admin_token, list_admin_tokens, revoke_admin_token


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tokens = sub.add_parser("admin-token", help="admin API tokens").add_subparsers(
        dest="admin_token_command", required=True
    )
    issue = tokens.add_parser("issue", help="create a token and print it once (global unless --org)")
    issue.add_argument("--org", help="scope the token to this organization (slug or id)")
    issue.add_argument("--name", help="a label shown in listings and audit events")
    issue.add_argument("--json", action="store_true", help="machine-readable output")
    issue.set_defaults(func=_issue)

    listing = tokens.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)

    revoke = tokens.add_parser("revoke", help="revoke a token for good")
    revoke.add_argument("token_id")
    revoke.set_defaults(func=_revoke)


def _issue(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        with app.db.transaction(immediate=True) as session:
            info, credential = issue_admin_token(
                session, app.hasher, organization=args.org, name=args.name, actor=actor()
            )
    finally:
        app.close()
    if args.json:
        print_json({**info.to_json(), "token": str(credential)})
    else:
        print(str(credential))
        scope = f"organization {info.organization_slug}" if info.organization_slug else "global"
        print(f"Admin token {info.token_id} ({scope}). This is the only time it is shown.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        with app.db.read() as session:
            tokens = list_admin_tokens(session)
    finally:
        app.close()
    if args.json:
        print_json([t.to_json() for t in tokens])
        return 0
    rows = [
        [
            t.token_id,
            t.name,
            t.organization_slug or "(global)",
            t.status,
            t.created_at.isoformat(),
            t.last_used_at.isoformat() if t.last_used_at else "-",
        ]
        for t in tokens
    ]
    print_table(rows, ["TOKEN ID", "NAME", "SCOPE", "STATUS", "CREATED", "LAST USED"])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        with app.db.transaction(immediate=True) as session:
            status = revoke_admin_token(session, args.token_id, actor=actor())
    finally:
        app.close()
    print(f"{args.token_id}: {status}")
    return 0
