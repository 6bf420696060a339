"""`quotagate keys issue|list|suspend|resume|revoke|rotate|check`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from quotagate.app import open_app
from quotagate.cli.common import actor, parse_duration, parse_when, print_json, print_table
from quotagate.identity.authenticate import AuthFailure, authenticate
from quotagate.identity.credentials import parse_credential
from quotagate.store import keys_repo
from quotagate.store.snapshot_loader import load_snapshot


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="gateway keys").add_subparsers(dest="keys_command", required=True)

    issue = keys.add_parser("issue", help="generate a key's secret and print the full credential once")
    issue.add_argument("key_id")
    issue.add_argument("--expires", help="expiry: a duration from now (30d) or an ISO 8601 time")
    issue.add_argument(
        "--replace",
        action="store_true",
        help="replace the key's current secret at once (clients using it stop working; `keys rotate` has a grace)",
    )
    issue.add_argument("--json", action="store_true", help="machine-readable output")
    issue.set_defaults(func=_issue)

    rotate = keys.add_parser("rotate", help="new secret; the old one stays valid for the grace period")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", default="1h", help="how long the old secret keeps working (default 1h)")
    rotate.add_argument("--json", action="store_true", help="machine-readable output")
    rotate.set_defaults(func=_rotate)

    listing = keys.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--org", help="only this organization (slug or id)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)

    for verb, text in (
        ("suspend", "stop a key until resumed"),
        ("resume", "re-enable a suspended key"),
        ("revoke", "disable a key for good"),
    ):
        p = keys.add_parser(verb, help=text)
        p.add_argument("key_id")
        p.set_defaults(func=_set_status, verb=verb)

    check = keys.add_parser("check", help="verify a credential read from stdin, as the gateway would")
    check.set_defaults(func=_check)


def _issue(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        expires = parse_when(args.expires) if args.expires else None
        with app.db.transaction() as session:
            cred = keys_repo.issue_key(
                session, app.hasher, args.key_id, actor=actor(), expires_at=expires, replace=args.replace
            )
    finally:
        app.close()
    if args.json:
        print_json({"key_id": cred.key_id, "credential": str(cred), "expires_at": expires})
    else:
        print(str(cred))
        print("This is the only time the credential is shown; store it now.", file=sys.stderr)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    grace = parse_duration(args.grace)
    app = open_app()
    try:
        with app.db.transaction() as session:
            cred = keys_repo.rotate_key(session, app.hasher, args.key_id, actor=actor(), grace=grace)
    finally:
        app.close()
    if args.json:
        print_json(
            {
                "key_id": cred.key_id,
                "credential": str(cred),
                "old_secret_valid_for_s": int(grace.total_seconds()),
            }
        )
    else:
        print(str(cred))
        print(
            f"The previous secret stays valid for {args.grace}. This is the only time the new one is shown.",
            file=sys.stderr,
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        with app.db.read() as session:
            keys = keys_repo.list_keys(session, args.org)
    finally:
        app.close()
    if args.json:
        print_json([k.to_json() for k in keys])
        return 0
    rows = [
        [
            k.key_id,
            k.organization,
            k.project,
            k.client,
            k.status,
            "yes" if k.issued else "no",
            k.expires_at.isoformat() if k.expires_at else "-",
            k.last_used_at.isoformat() if k.last_used_at else "-",
        ]
        for k in keys
    ]
    print_table(rows, ["KEY ID", "ORG", "PROJECT", "CLIENT", "STATUS", "ISSUED", "EXPIRES", "LAST USED"])
    return 0


def _set_status(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        with app.db.transaction() as session:
            status = keys_repo.set_key_status(session, args.key_id, args.verb, actor=actor())
    finally:
        app.close()
    print(f"{args.key_id}: {status}")
    return 0


def _check(_args: argparse.Namespace) -> int:
    raw = sys.stdin.readline()
    app = open_app()
    try:
        with app.db.read() as session:
            snapshot = load_snapshot(session)
    finally:
        app.close()
    outcome = authenticate(snapshot, app.hasher, parse_credential(raw), datetime.now(UTC))
    if isinstance(outcome, AuthFailure):
        print(f"rejected: {outcome.value} (HTTP {outcome.status})")
        return 1
    print(
        f"valid: key {outcome.key.key_id}, client {outcome.client.name}, project {outcome.project.slug}, "
        f"organization {outcome.org.slug}"
    )
    return 0
