"""The SQL side of the store: one engine, sessions, and the schema kept current."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from quotagate.errors import BackendUnavailable
from quotagate.store.db import ensure_schema, make_engine


class Database:
    def __init__(self, url: str, *, auto_upgrade: bool = True) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        if auto_upgrade:
            ensure_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, *, immediate: bool = False) -> Iterator[Session]:
        """A session whose work commits on success and rolls back entirely on any error.

        `immediate` takes SQLite's write lock at BEGIN (needed when the transaction reads then appends)."""
        bind = self.engine.execution_options(immediate=True) if immediate else self.engine
        try:
            with Session(bind, expire_on_commit=False) as session, session.begin():
                yield session
        except OperationalError as exc:
            raise BackendUnavailable(f"database unreachable: {exc.orig}") from exc

    @contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                yield session
        except OperationalError as exc:
            raise BackendUnavailable(f"database unreachable: {exc.orig}") from exc

    def close(self) -> None:
        self.engine.dispose()
