"""Helpers shared by the command modules."""

from __future__ import annotations

import getpass
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from quotagate.errors import ConfigError

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '1h', '30d', '2w' -> timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"invalid duration {text!r}: use e.g. 30s, 15m, 1h, 30d, 2w")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A duration from now ('30d') or an ISO 8601 timestamp (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    if _DURATION.match(text.strip()):
        return now + parse_duration(text)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"invalid time {text!r}: use a duration (30d) or ISO 8601 (2027-01-31T00:00:00Z)") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_past(text: str, now: datetime | None = None) -> datetime:
    """A duration back from now ('7d') or an ISO 8601 timestamp (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    if _DURATION.match(text.strip()):
        return now - parse_duration(text)
    return parse_when(text, now)


def actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
