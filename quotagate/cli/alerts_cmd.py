"""`quotagate alerts test|history`: check webhook receivers, see what fired (docs/governance.md)."""

from __future__ import annotations

import argparse
import os
import secrets
import time

import httpx

from quotagate.app import open_app
from quotagate.cli.common import print_json, print_table
from quotagate.errors import NotFoundError, QuotagateError
from quotagate.governance.alerts import render, resolve_ref, sample_event
from quotagate.governance.webhooks import post
from quotagate.store.alerts_repo import list_firings, list_receivers, organization_slugs
from quotagate.store.reports import resolve_org

FAILED = 1  # exit code when a receiver did not accept the sample


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alerts = sub.add_parser("alerts", help="alert webhooks").add_subparsers(dest="alerts_command", required=True)
    test = alerts.add_parser(
        "test", help=f"send a signed sample alert to the configured receivers, or to --url (exit {FAILED} on failure)"
    )
    test.add_argument("--org", help="only this organization's receivers (slug or id)")
    test.add_argument("--url", help="send to this URL instead of the configured receivers")
    test.add_argument("--format", choices=("json", "slack"), default="json", help="body shape for --url")
    test.add_argument(
        "--secret-env", metavar="VAR", help="with --url: sign with this variable's value (default: a one-off secret)"
    )
    test.set_defaults(func=_test)
    history = alerts.add_parser("history", help="recent firings of an organization and their deliveries")
    history.add_argument("--org", required=True, help="organization (slug or id)")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--json", action="store_true", help="machine-readable output")
    history.set_defaults(func=_history)


def _test(args: argparse.Namespace) -> int:
    now = time.time()
    app = open_app()
    try:
        with app.db.read() as session:
            org_id = resolve_org(session, args.org) if args.org else None
            if args.org and org_id is None:
                raise NotFoundError(f"no organization {args.org!r}")
            receivers = [] if args.url else list_receivers(session, org_id, active_only=True)
            slugs = organization_slugs(session)
    finally:
        app.close()
    with httpx.Client(timeout=10) as client:
        if args.url:
            return _test_url(client, args, org_id, slugs, now)
        if not receivers:
            print("no active alert receivers configured" + (f" in {args.org}" if args.org else ""))
            return FAILED
        failed = False
        for r in receivers:
            label = f"{slugs.get(r['organization_id'], r['organization_id'])}/{r['name']}"
            url, key = resolve_ref(r["url"], os.environ), resolve_ref(r["signing_secret"], os.environ)
            unset = [ref[4:] for ref in (r["url"], r["signing_secret"]) if ref and resolve_ref(ref, os.environ) is None]
            if url is None or unset:
                failed |= _report(label, f"the variable(s) {', '.join(unset)} are not set") != 0
                continue
            body = render(r["format"], sample_event(r["organization_id"], slugs.get(r["organization_id"]), now))
            failed |= _report(label, post(client, url, body, secret=key, delivery_id="test", now=now)) != 0
        return FAILED if failed else 0


def _test_url(
    client: httpx.Client, args: argparse.Namespace, org_id: str | None, slugs: dict[str, str], now: float
) -> int:
    if args.secret_env:
        secret = os.environ.get(args.secret_env, "")
        if not secret:
            raise QuotagateError(f"the variable {args.secret_env} is not set")
    else:
        secret = secrets.token_urlsafe(32)
        print(f"signing with a one-off secret: {secret}")
    org = org_id or "sample-org"
    body = render(args.format, sample_event(org, slugs.get(org), now))
    return _report(args.url, post(client, args.url, body, secret=secret, delivery_id="test", now=now))


def _report(target: str, error: str | None) -> int:
    print(f"{target}: {'delivered' if error is None else 'FAILED: ' + error}")
    return 0 if error is None else FAILED


def _history(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        with app.db.read() as session:
            org_id = resolve_org(session, args.org)
            if org_id is None:
                raise NotFoundError(f"no organization {args.org!r}")
            firings = list_firings(session, org_id, args.limit)
    finally:
        app.close()
    if args.json:
        print_json(firings)
        return 0
    rows = [
        [
            str(f["fired_at"]),
            f["rule_id"].split(":", 1)[1],
            f["threshold"],
            f["period"],
            ", ".join(f"{d['receiver']}:{d['status']}" for d in f["deliveries"])
            or ("-" if f["delivered"] else "superseded"),
            f["message"],
        ]
        for f in firings
    ]
    print_table(rows, ["FIRED", "RULE", "THRESHOLD", "PERIOD", "DELIVERIES", "MESSAGE"])
    return 0
