"""`quotagate config show|docs`."""

from __future__ import annotations

import argparse

from quotagate.cli.common import print_json
from quotagate.settings import load_settings, settings_reference_markdown


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cfg = sub.add_parser("config", help="settings").add_subparsers(dest="config_command", required=True)
    cfg.add_parser("show", help="print the effective settings, secrets masked").set_defaults(func=_show)
    cfg.add_parser("docs", help="print the settings reference (docs/settings.md)").set_defaults(func=_docs)


def _show(_args: argparse.Namespace) -> int:
    settings = load_settings()
    data = settings.model_dump(mode="json")
    data["effective_database_url"] = _mask_url(settings.effective_database_url)
    if data.get("database_url"):
        data["database_url"] = _mask_url(data["database_url"])
    if data.get("redis_url"):
        data["redis_url"] = _mask_url(data["redis_url"])
    print_json(data)
    return 0


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return url


def _docs(_args: argparse.Namespace) -> int:
    print(settings_reference_markdown(), end="")
    return 0
