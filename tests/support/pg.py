"""Throwaway PostgreSQL databases: a migrated template per run, cloned per test (fast CREATE ... TEMPLATE)."""

from __future__ import annotations

import itertools

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.servers import RUN_ID, postgres_admin_url

_counter = itertools.count()


class PgDatabases:
    def __init__(self, admin_url: str | None = None) -> None:
        self.admin_url = make_url(admin_url or postgres_admin_url())
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.template = f"qg_{RUN_ID}_tpl"
        self.created: list[str] = []
        self._template_ready = False

    def url_for(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def ping(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _ensure_template(self) -> None:
        if self._template_ready:
            return
        from quotagate.store.db import make_engine, upgrade

        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.template}"'))
            conn.execute(text(f'CREATE DATABASE "{self.template}"'))
        self.created.append(self.template)
        engine = make_engine(self.url_for(self.template))
        upgrade(engine)
        engine.dispose()
        self._template_ready = True

    def new_database(self, migrated: bool = True) -> str:
        name = f"qg_{RUN_ID}_{next(_counter)}"
        with self.admin.connect() as conn:
            if migrated:
                self._ensure_template()
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
            else:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.url_for(name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in reversed(self.created):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()
