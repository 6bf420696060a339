"""`quotagate audit verify|checkpoint|export`: the tamper-evident ledger (docs/ledger.md).

`verify --export DIR` is the auditor's path: it reads only the export, so the store and settings are
imported inside the commands that use the database, never by it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from quotagate.cli.common import parse_past, print_json
from quotagate.errors import ConfigError
from quotagate.ledger.checkpoint import Checkpoint, KeyRing, load_public_keys, read_checkpoints
from quotagate.ledger.verify import ChainReport

if TYPE_CHECKING:
    from quotagate.settings import Settings

BROKEN = 1  # exit code of a verification that found a break


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="verify, checkpoint and export the hash-chained ledger").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify", help=f"recompute the chain(s) and report the first broken link (exit {BROKEN} on any break)"
    )
    verify.add_argument("--org", help="only this organization (id or slug; `_global` for the global chain)")
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help="also check against these checkpoints: a JSON file, JSON Lines, or an anchor directory (repeatable)",
    )
    verify.add_argument(
        "--no-anchors",
        action="store_true",
        help="do not read the configured anchor directory's checkpoints (read by default)",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        help="trust only the Ed25519 keys in this PEM file (repeatable); default: the configured signing key's "
        "and those of ledger_trusted_public_keys",
    )
    verify.add_argument("--export", type=Path, metavar="DIR", help="verify an audit export instead (no database)")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(func=_verify)

    checkpoint = audit.add_parser("checkpoint", help="sign the chain head(s) now and publish to the anchor sinks")
    checkpoint.add_argument("--org", help="only this organization (id or slug)")
    checkpoint.add_argument("--json", action="store_true", help="machine-readable output")
    checkpoint.set_defaults(func=_checkpoint)

    public = audit.add_parser(
        "public-key", help="print the signing key's public key (PEM, on stdout) and its key id (on stderr)"
    )
    public.set_defaults(func=_public_key)

    export = audit.add_parser("export", help="write a chain, its checkpoints and public key for an auditor")
    export.add_argument("--org", required=True, help="organization (id or slug; `_global` for the global chain)")
    export.add_argument(
        "--since", help="start at the last checkpoint before this time (ISO 8601 or a duration back, e.g. 30d)"
    )
    export.add_argument("--out", type=Path, required=True, help="new or empty directory to write")
    export.set_defaults(func=_export)


def _public_keys(paths: list[Path]) -> list[Ed25519PublicKey]:
    keys: list[Ed25519PublicKey] = []
    for path in paths:
        try:
            keys.extend(load_public_keys(path.expanduser().read_bytes()))
        except OSError as exc:
            raise ConfigError(f"cannot read public key: {exc}") from exc
    return keys


def _verify(args: argparse.Namespace) -> int:
    pinned = _public_keys(args.public_key or [])
    extra = [cp for path in args.checkpoint or [] for cp in read_checkpoints(path)]
    if args.export is not None:
        from quotagate.ledger.export import verify_export

        reports = [verify_export(args.export, pinned or None, extra)]
    else:
        reports = _verify_database(args.org, pinned, extra, anchors=not args.no_anchors, quiet=args.json)
    if args.json:
        print_json([r.to_json() for r in reports])
    else:
        for report in reports:
            print(report.summary())
    return 0 if all(r.ok for r in reports) else BROKEN


def _verify_database(
    org: str | None, pinned: list[Ed25519PublicKey], extra: list[Checkpoint], *, anchors: bool, quiet: bool
) -> list[ChainReport]:
    from quotagate.app import open_app
    from quotagate.ledger.anchors import anchor_dir
    from quotagate.store.ledger_audit import chain_orgs, resolve_chain, verify_org

    app = open_app()
    try:
        keys = KeyRing(pinned or _configured_keys(app.settings, app.db.dialect))
        if anchors:
            # The anchors are what catches a cut tail when the checkpoint table was emptied too.
            extra = [*extra, *_anchored(anchor_dir(app.settings), quiet)]
        with app.db.read() as session:
            orgs = [resolve_chain(session, org)] if org else sorted({*chain_orgs(session), *(cp.org for cp in extra)})
            return [verify_org(session, o, keys, extra) for o in orgs]
    finally:
        app.close()


def _configured_keys(settings: Settings, dialect: str) -> list[Ed25519PublicKey]:
    """The current signing key's public key and the earlier ones of `ledger_trusted_public_keys`."""
    from quotagate.ledger.checkpoint import signer_from_settings

    earlier = _public_keys([settings.ledger_trusted_public_keys] if settings.ledger_trusted_public_keys else [])
    try:
        return [signer_from_settings(settings, dialect).public_key, *earlier]
    except ConfigError:
        if earlier:  # a verifying host may hold only public keys
            return earlier
        raise


def _anchored(directory: Path, quiet: bool) -> list[Checkpoint]:
    note = sys.stderr if quiet else sys.stdout
    if not directory.is_dir():
        print(
            f"anchors: no anchor directory at {directory}; only the database's checkpoints are checked "
            "(a cut tail with an emptied checkpoint table would go unnoticed: pass --checkpoint)",
            file=note,
        )
        return []
    found = read_checkpoints(directory)
    print(f"anchors: {len(found)} checkpoint(s) read from {directory}", file=note)
    return found


def _checkpoint(args: argparse.Namespace) -> int:
    from quotagate.app import open_app
    from quotagate.ledger.anchors import sinks_from_settings
    from quotagate.ledger.checkpoint import signer_from_settings
    from quotagate.store.ledger_audit import resolve_chain
    from quotagate.store.ledger_checkpoints import Checkpointer

    app = open_app()
    try:
        signer = signer_from_settings(app.settings, app.db.dialect)
        sinks = sinks_from_settings(app.settings)
        checkpointer = Checkpointer(app.db, signer, sinks, app.settings.ledger_checkpoint_interval_s)
        orgs = None
        if args.org:
            with app.db.read() as session:
                orgs = [resolve_chain(session, args.org)]
        outcomes = checkpointer.checkpoint(orgs, force=True)
    finally:
        app.close()
    if args.json:
        print_json(
            [
                {
                    "org": o.org,
                    "status": o.status,
                    "checkpoint": o.checkpoint.to_json() if o.checkpoint else None,
                    "problems": [p.to_json() for p in o.report.problems] if o.report else [],
                }
                for o in outcomes
            ]
        )
    else:
        for o in outcomes:
            if o.checkpoint is not None:
                print(f"{o.org}: {o.status} seq {o.checkpoint.seq} hash {o.checkpoint.hash[:16]}…")
            elif o.report is not None:
                print(f"{o.org}: NOT SIGNED, the chain does not verify\n{o.report.summary()}")
            else:
                print(f"{o.org}: {o.status}")
        print(f"key {signer.key_id}; published to {', '.join(sink.name for sink in sinks)}")
    return BROKEN if any(o.status == "refused" for o in outcomes) else 0


def _public_key(_args: argparse.Namespace) -> int:
    from quotagate.app import open_app
    from quotagate.ledger.checkpoint import public_pem, signer_from_settings

    app = open_app()
    try:
        signer = signer_from_settings(app.settings, app.db.dialect)
    finally:
        app.close()
    sys.stdout.write(public_pem(signer.public_key).decode())
    print(f"key id {signer.key_id}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from quotagate.app import open_app
    from quotagate.ledger.checkpoint import signer_from_settings
    from quotagate.store.ledger_audit import export_org, resolve_chain

    since = parse_past(args.since) if args.since else None
    app = open_app()
    try:
        public = signer_from_settings(app.settings, app.db.dialect).public_key
        with app.db.read() as session:
            org = resolve_chain(session, args.org)
        manifest = export_org(app.db, org, public, args.out, since)
    finally:
        app.close()
    print(
        f"{org}: wrote entries {manifest['first_seq']}..{manifest['last_seq']} and {manifest['checkpoints']} "
        f"checkpoint(s) to {args.out}; key id {manifest['key_id']}"
    )
    return 0
