"""`quotagate usage report [--since] [--until] [--by ...] [--json|--csv]`."""

from __future__ import annotations

import argparse
import csv
import sys

from quotagate.app import open_app
from quotagate.cli.common import parse_past, print_json, print_table
from quotagate.errors import ConfigError, NotFoundError
from quotagate.money import format_units
from quotagate.store.reports import GROUPS, MEASURES, ReportQuery, resolve_org, usage_report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = sub.add_parser("usage", help="usage reports").add_subparsers(dest="usage_command", required=True)
    rep = usage.add_parser("report", help="tokens and cost, grouped; totals equal the sum of the events")
    rep.add_argument("--since", help="start: ISO 8601 time, or a duration back from now (7d)")
    rep.add_argument("--until", help="end (exclusive): ISO 8601 time, or a duration back from now")
    rep.add_argument("--by", default="", help=f"comma-separated groups: {','.join(GROUPS)}")
    rep.add_argument("--org", help="only this organization (slug or id)")
    rep.add_argument("--denied", action="store_true", help="include denied requests (with --by reason)")
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON output (cost as exact decimal strings)")
    fmt.add_argument("--csv", action="store_true", help="CSV output")
    rep.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    group_by = tuple(g.strip() for g in args.by.split(",") if g.strip())
    if unknown := [g for g in group_by if g not in GROUPS]:
        raise ConfigError(f"unknown --by group(s) {unknown}; choose from {', '.join(GROUPS)}")
    app = open_app()
    try:
        with app.db.read() as session:
            org_id = None
            if args.org:
                org_id = resolve_org(session, args.org)
                if org_id is None:
                    raise NotFoundError(f"no organization {args.org!r}")
            report = usage_report(
                session,
                ReportQuery(
                    group_by=group_by,
                    since=parse_past(args.since) if args.since else None,
                    until=parse_past(args.until) if args.until else None,
                    org_id=org_id,
                    include_denied=args.denied,
                ),
            )
    finally:
        app.close()

    def cost(n: int) -> str:
        return format_units(n)

    if args.json:
        print_json(
            {
                "group_by": list(group_by),
                "rows": [{**r, "cost": cost(r["cost_nanos"])} for r in report.rows],
                "totals": {**report.totals, "cost": cost(report.totals["cost_nanos"])},
            }
        )
        return 0
    header = [*group_by, *MEASURES[:-1], "cost"]
    lines = [
        [*(str(r[g]) for g in group_by), *(str(r[m]) for m in MEASURES[:-1]), cost(r["cost_nanos"])]
        for r in report.rows
    ]
    total = [
        *(["TOTAL"] + [""] * (len(group_by) - 1) if group_by else []),
        *(str(report.totals[m]) for m in MEASURES[:-1]),
        cost(report.totals["cost_nanos"]),
    ]
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows([*lines, total])
        return 0
    print_table([*lines, total], [h.upper() for h in header])
    return 0
