"""`quotagate db upgrade|status`."""

from __future__ import annotations

import argparse

from quotagate.settings import load_settings
from quotagate.store.db import SCHEMA_HEAD, current_revision, make_engine, upgrade


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="migrate the database to the newest schema")
    up.set_defaults(func=_upgrade)
    st = db.add_parser("status", help="show the schema revision")
    st.set_defaults(func=_status)


def _upgrade(_args: argparse.Namespace) -> int:
    engine = make_engine(load_settings().effective_database_url)
    before, after = upgrade(engine)
    print(f"database at {after} (was {before or 'empty'})" if before != after else f"database already at {after}")
    return 0


def _status(_args: argparse.Namespace) -> int:
    engine = make_engine(load_settings().effective_database_url)
    current, head = current_revision(engine), SCHEMA_HEAD
    print(f"current {current or 'empty'}, newest {head}{'' if current == head else ' (run `quotagate db upgrade`)'}")
    return 0 if current == head else 1
