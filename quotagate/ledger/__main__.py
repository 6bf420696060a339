"""`python -m quotagate.ledger DIR [--public-key PEM]`: verify an audit export with no database or settings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quotagate.errors import QuotagateError
from quotagate.ledger.checkpoint import load_public_keys
from quotagate.ledger.export import verify_export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quotagate.ledger", description=__doc__)
    parser.add_argument("export", type=Path, help="directory written by `quotagate audit export`")
    parser.add_argument("--public-key", type=Path, action="append", help="trust only this PEM key (repeatable)")
    args = parser.parse_args(argv)
    try:
        pinned = [k for path in args.public_key or [] for k in load_public_keys(path.read_bytes())]
        report = verify_export(args.export, pinned or None)
    except (QuotagateError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
