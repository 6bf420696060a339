"""A per-process durable spool of usage events: appended before a response finishes, drained to SQL later.

Each process owns one SQLite file (WAL, synchronous=NORMAL: a commit survives the process being killed)
under ``$QUOTAGATE_HOME/spool/`` and holds an exclusive ``flock`` on a sidecar lock file while alive. Any
process that can take the lock of a spool it does not own adopts it: the owner died, its events still
land. Keeping the spool local (not in Redis) means an outage of Redis or PostgreSQL loses nothing.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

from quotagate.metering.record import UsageRecord


class Spool:
    def __init__(self, directory: Path, name: str | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name or f'spool-{os.getpid()}-{uuid.uuid4().hex[:8]}'}.db"
        self._lock_fd = _take_lock(self.path)
        if self._lock_fd is None:
            raise RuntimeError(f"spool {self.path} is owned by a live process")
        self._conn = _open(self.path)
        self._mutex = threading.Lock()

    def append(self, event: UsageRecord) -> None:
        data = orjson.dumps(event.to_json())
        with self._mutex:
            self._conn.execute("INSERT INTO events (body) VALUES (?)", (data,))

    def batch(self, limit: int) -> list[tuple[int, UsageRecord]]:
        with self._mutex:
            rows = self._conn.execute("SELECT seq, body FROM events ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(seq, UsageRecord.from_json(orjson.loads(body))) for seq, body in rows]

    def delete_through(self, seq: int) -> None:
        with self._mutex:
            self._conn.execute("DELETE FROM events WHERE seq <= ?", (seq,))

    def depth(self) -> int:
        with self._mutex:
            return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self, *, remove_if_empty: bool = True) -> None:
        empty = self.depth() == 0
        with self._mutex:
            self._conn.close()
        if remove_if_empty and empty:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            Path(f"{self.path}.lock").unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @classmethod
    def adopt_orphans(cls, directory: Path) -> Iterator[Spool]:
        """Spools whose owners are gone (their lock is free); each is yielded locked to this process."""
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("spool-*.db")):
            fd = _take_lock(path)
            if fd is None:
                continue
            os.close(fd)
            try:
                yield cls(directory, path.stem)
            except RuntimeError:
                continue


def _take_lock(path: Path) -> int | None:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)")
    return conn
