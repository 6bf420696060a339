"""`quotagate manifest validate|plan|apply FILE`."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from quotagate.app import open_app
from quotagate.cli.common import actor, print_json
from quotagate.manifest.desired import desired_state
from quotagate.manifest.load import ManifestError, load_file
from quotagate.manifest.schema import Manifest, manifest_json_schema
from quotagate.store.manifest_apply import CONFLICT_SOURCE, Plan, apply_plan, plan_manifest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    man = sub.add_parser("manifest", help="validate, plan and apply a manifest").add_subparsers(
        dest="manifest_command", required=True
    )
    for name, func, text in (
        ("validate", _validate, "check a manifest file; every error is reported with its path (exit 2)"),
        ("plan", _plan, "show what apply would create, change and disable; changes nothing"),
        (
            "apply",
            _apply,
            "apply a manifest in one transaction; applying the same file again changes nothing",
        ),
    ):
        p = man.add_parser(name, help=text)
        p.add_argument("file", help="manifest file, YAML or JSON")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
    schema = man.add_parser("schema", help="print the manifest's JSON Schema (docs/manifest.schema.json)")
    schema.set_defaults(func=_schema)


def _load(args: argparse.Namespace) -> Manifest:
    try:
        return load_file(args.file)
    except ManifestError as exc:
        _fail(args, exc)


def _fail(args: argparse.Namespace, exc: ManifestError) -> NoReturn:
    """Every problem with its path, on stderr (or as JSON on stdout); exit code 2."""
    if args.json:
        print_json({"valid": False, "errors": [{"path": p.path, "message": p.message} for p in exc.problems]})
    elif exc.source == CONFLICT_SOURCE:
        print(ManifestError(f"{args.file}: {CONFLICT_SOURCE}", exc.problems), file=sys.stderr)
    else:
        print(exc, file=sys.stderr)
    raise SystemExit(2)


def _validate(args: argparse.Namespace) -> int:
    manifest = _load(args)
    orgs = len(manifest.organizations)
    keys = sum(len(c.api_keys) for o in manifest.organizations for p in o.projects for c in p.clients)
    if args.json:
        print_json({"valid": True, "organizations": orgs, "keys": keys})
    else:
        print(f"{args.file}: valid ({orgs} organization(s), {keys} key(s))")
    return 0


def _plan(args: argparse.Namespace) -> int:
    desired = desired_state(_load(args))
    app = open_app()
    try:
        with app.db.read() as session:
            plan = plan_manifest(session, desired)
    except ManifestError as exc:
        _fail(args, exc)
    finally:
        app.close()
    _show(args, plan)
    return 0


def _apply(args: argparse.Namespace) -> int:
    desired = desired_state(_load(args))
    app = open_app()
    try:
        with app.db.transaction() as session:
            plan = plan_manifest(session, desired)
            apply_plan(session, desired, plan, actor=f"{actor()} manifest {args.file}")
    except ManifestError as exc:
        _fail(args, exc)
    finally:
        app.close()
    _show(args, plan, applied=True)
    return 0


def _show(args: argparse.Namespace, plan: Plan, applied: bool = False) -> None:
    if args.json:
        print_json({**plan.to_json(), "applied": applied and not plan.empty})
        return
    if plan.empty:
        kept = any(c.action == "note" for c in plan.changes)
        print(
            "No changes. Kept as changed outside the manifest:"
            if kept
            else "No changes. The database matches the manifest."
        )
    for change in plan.changes:
        print(change.describe())
    if not plan.empty:
        print(("Applied: " if applied else "Plan: ") + plan.summary() + ".")


def _schema(_args: argparse.Namespace) -> int:
    print_json(manifest_json_schema())
    return 0
