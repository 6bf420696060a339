"""Manifest paths: `organizations[0].quotas[1].rpm_limit` to and from pydantic-style locations."""

from __future__ import annotations

import re

Loc = tuple[int | str, ...]

_TOKEN = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_path(path: str) -> Loc:
    """The inverse of format_path for the paths the manifest checks write (names and list indices)."""
    return tuple(int(index) if index else name for index, name in _TOKEN.findall(path))
