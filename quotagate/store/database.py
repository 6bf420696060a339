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
    def transaction(self, *, immediate: bool = True) -> Iterator[Session]:
        """A session whose work commits on success and rolls back entirely on any error.

        On SQLite it takes the write lock at BEGIN (IMMEDIATE): writes are serialized there anyway, and a
        transaction that reads a chain head then appends must not race another writer. Pass
        `immediate=False` only for a write that reads nothing it depends on."""
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
