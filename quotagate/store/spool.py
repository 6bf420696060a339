"""A per-process durable spool of usage events: appended before a response finishes, drained to SQL later.

Each process owns one SQLite file (WAL, synchronous=NORMAL: a commit survives the process being killed)
under ``$QUOTAGATE_HOME/spool/`` and holds an exclusive ``flock`` on a sidecar lock file while alive. Any
process that can take the lock of a spool it does not own adopts it: the owner died, its events still
land. Keeping the spool local (not in Redis) means an outage of Redis or PostgreSQL loses nothing.

Events are indexed by request id, so the sweeper can tell a request that was recorded but not yet written (its
process died, or the database is down) from one nobody saw: ``find_spooled`` reads every spool in the
directory, live ones of other processes sharing the home included, read-only.
"""

from __future__ import annotations

import contextlib
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
            self._conn.execute("INSERT INTO events (request_id, body) VALUES (?, ?)", (event.request_id, data))

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

    def find(self, request_id: str) -> list[UsageRecord]:
        with self._mutex:
            return _find(self._conn, request_id)

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


class Quarantine:
    """Events the database refused even one by one (a value no cleaning made storable): appended, fsynced, as
    JSON Lines with the reason, to ``quarantine.jsonl`` beside the spools, for an operator to inspect and replay
    (``UsageRecord.from_json`` of each line's ``event``). Accepted usage is never dropped, only set aside."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "quarantine.jsonl"
        self._mutex = threading.Lock()

    def append(self, event: UsageRecord, *, reason: str) -> None:
        line = orjson.dumps({"reason": reason, "event": event.to_json()}) + b"\n"
        with self._mutex, self.path.open("ab") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    def events(self) -> list[tuple[str, UsageRecord]]:
        if not self.path.exists():
            return []
        rows = [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]
        return [(row["reason"], UsageRecord.from_json(row["event"])) for row in rows]


def find_spooled(directory: Path, request_id: str) -> list[UsageRecord]:
    """Every spooled event of `request_id` in any spool under `directory` (read-only; a spool that vanishes or
    cannot be read meanwhile is skipped: it was being drained, so its events are in SQL or another spool)."""
    found: list[UsageRecord] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("spool-*.db")):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            continue
        try:
            with contextlib.closing(conn):
                found += _find(conn, request_id)
        except sqlite3.Error:
            continue
    return found


def _find(conn: sqlite3.Connection, request_id: str) -> list[UsageRecord]:
    rows = conn.execute("SELECT body FROM events WHERE request_id = ? ORDER BY seq", (request_id,)).fetchall()
    return [UsageRecord.from_json(orjson.loads(body)) for (body,) in rows]


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
    conn.execute(
        "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, body BLOB NOT NULL)"
    )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "request_id" not in columns:  # a spool of an older version (adopted after an upgrade)
        conn.execute("ALTER TABLE events ADD COLUMN request_id TEXT")
        conn.execute("UPDATE events SET request_id = json_extract(CAST(body AS TEXT), '$.request_id')")
    conn.execute("CREATE INDEX IF NOT EXISTS events_by_request ON events (request_id)")
    return conn
