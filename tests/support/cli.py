"""The `quotagate` CLI in the test process."""

from __future__ import annotations

from quotagate.cli.main import main


def run(argv: list[str]) -> int:
    """`quotagate ARGV`'s exit code, whether the command returns it or raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
