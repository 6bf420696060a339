"""Drains spooled usage events into SQL in batches: usage rows, ledger debits, key last-use times.

Idempotent by request id (a replayed batch never double-counts). While the database is down the spool
grows on disk and the writer retries with backoff; every event lands once it is back.

A request has at most one event, and real figures beat a sweeper's estimate (``UsageRecord.swept``):

* in one batch, the first event that is not swept wins over swept ones (and over later replays);
* a real event arriving after the swept one was stored *replaces* the row's figures, and the ledger, which is
  append-only, gets a ``sweep`` entry crediting back the sweep's debit and the request's ``usage`` debit;
* a swept event arriving after the real one is dropped.

Ledger: an admitted request's debit is a ``usage`` entry; a swept one's a ``sweep`` entry (``data.swept``). So
the sum of a chain's ``usage`` and ``sweep`` entries is minus the sum of its events' costs, always.

Whenever real figures and a sweep's estimate met, the writer hands the real figures to ``on_resettle`` (the
runtime settles them in the counters, which hold the estimate unless the request's own meter corrected it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from quotagate.limits.model import Settlement
from quotagate.metering.record import UsageRecord
from quotagate.metrics import BACKEND_ERRORS, QUARANTINED, SPOOLED
from quotagate.store.database import Database
from quotagate.store.ledger_repo import NewEntry, append_entries
from quotagate.store.spool import Quarantine, Spool
from quotagate.store.tables import GatewayKey, LedgerEntry, UsageEvent
from quotagate.store.usage_repo import row_tokens, swept_row

log = logging.getLogger(__name__)
BATCH = 500
ORPHAN_SCAN_S = 5.0  # how soon a dead process's spool is adopted (a glob and a lock attempt per file)
SUPERSEDED_TAG = "superseded_sweep"  # on a row whose swept figures real ones replaced
Resettle = Callable[[list[Settlement]], None]


class UsageWriter:
    """The UsageSink of a gateway process: `record` appends to the spool; a thread drains it."""

    def __init__(self, db: Database, spool_dir: Path, *, interval_s: float = 0.05) -> None:
        self._db = db
        self._dir = spool_dir
        self._spool = Spool(spool_dir)
        self._quarantine = Quarantine(spool_dir)
        self._interval = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_lock = threading.Lock()
        self.written = 0
        self.failures = 0
        self._last_orphan_scan = 0.0
        self.on_resettle: Resettle | None = None  # set by the runtime: real figures that met a sweep

    # -- UsageSink
    def record(self, event: UsageRecord) -> None:
        self._spool.append(event)

    # -- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.drain_once()
        except Exception as exc:
            log.warning("final drain failed (%s); %d event(s) stay in %s", exc, self.depth(), self._spool.path)
        self._spool.close()

    def depth(self) -> int:
        return self._spool.depth()

    def flush(self, timeout: float = 30.0) -> None:
        """Write everything spooled so far (tests, shutdown); raises if the database stays unreachable."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.drain_once()
                if self.depth() == 0:
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.depth()} usage event(s) still spooled")
            time.sleep(0.05)

    def _run(self) -> None:
        backoff = self._interval
        while not self._stop.is_set():
            try:
                self.drain_once()
                SPOOLED.set(self.depth())
                if time.monotonic() - self._last_orphan_scan > ORPHAN_SCAN_S:
                    self._adopt_orphans()
                backoff = self._interval
            except Exception as exc:
                self.failures += 1
                BACKEND_ERRORS.labels("database").inc()
                backoff = min(backoff * 2, 5.0)
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("usage writer: %s; %d event(s) spooled, retrying", exc, self.depth())
            self._wake.wait(backoff)
            self._wake.clear()

    def drain_once(self) -> int:
        """Write what is spooled. Only a full batch is followed at once by the next: the few events that arrive
        while one is written wait for the next round, so batches grow with the rate instead of shrinking to one
        event each (a transaction costs ~10x an event; the spool keeps them durable meanwhile)."""
        with self._drain_lock:
            total = 0
            while True:
                batch = self._spool.batch(BATCH)
                if not batch:
                    return total
                self._write_or_isolate([event for _, event in batch])
                self._spool.delete_through(batch[-1][0])
                total += len(batch)
                self.written += len(batch)
                if len(batch) < BATCH:
                    return total

    def _write_or_isolate(self, events: list[UsageRecord]) -> None:
        """Write a batch; if the database refuses its *content* (not an outage), write its events one by one and
        set aside, durably, any single event it still refuses: one bad event must not hold every later one."""
        try:
            self._write(events)
            return
        except Exception as exc:
            if not _refused_content(exc):
                raise  # an outage: the whole batch stays spooled and is retried
            log.warning("usage writer: a batch of %d was refused (%s); writing its events one by one", len(events), exc)
        for event in events:
            try:
                self._write([event])
            except Exception as exc:
                if not _refused_content(exc):
                    raise
                self._quarantine.append(event, reason=f"{exc.__class__.__name__}: {exc}")
                QUARANTINED.inc()
                log.error(
                    "usage event %s refused by the database and set aside in %s: %s",
                    event.request_id,
                    self._quarantine.path,
                    exc,
                )

    def _write(self, events: list[UsageRecord]) -> None:
        with self._db.transaction(immediate=True) as session:
            written = write_events(session, events)
        if written.resettle and self.on_resettle is not None:
            try:
                self.on_resettle(written.resettle)
            except Exception:  # the counters keep the sweep's estimate: over or under by one request, logged
                log.exception("handing %d real settlement(s) to the counters failed", len(written.resettle))

    def _adopt_orphans(self) -> None:
        self._last_orphan_scan = time.monotonic()
        for orphan in Spool.adopt_orphans(self._dir):
            log.info("adopting spool %s of a stopped process", orphan.path.name)
            try:
                while batch := orphan.batch(BATCH):
                    self._write_or_isolate([event for _, event in batch])
                    orphan.delete_through(batch[-1][0])
            finally:  # unlocked again on failure, so the next scan retries it
                orphan.close()


@dataclass
class Written:
    inserted: int = 0  # new usage rows
    replaced: int = 0  # swept rows whose figures real ones replaced
    # Real figures that met a sweep's estimate, for the counters (reservation id == request id, gateway/check.py).
    resettle: list[Settlement] = field(default_factory=list)


def write_events(session: Session, events: Sequence[UsageRecord]) -> Written:
    """Store each request's event once (real figures beat a sweep's estimate, see the module docstring) and append
    the ledger entries of admitted ones."""
    out = Written()
    events = [storable(e) for e in events]
    chosen: dict[str, UsageRecord] = {}
    met: dict[str, Settlement | None] = {}  # request id -> the real figures that met a sweep's estimate
    for e in events:
        have = chosen.get(e.request_id)
        if have is None:
            chosen[e.request_id] = e
        elif have.swept and not e.swept:
            chosen[e.request_id] = e
            met[e.request_id] = _of_record(e)
        elif e.swept and not have.swept:
            met[e.request_id] = _of_record(have)
        # else: a replay of the first (a batch may carry one): dropped
    # FOR UPDATE (PostgreSQL): a row two writers would both replace is replaced by one; the other then sees it real.
    query = select(UsageEvent).where(UsageEvent.request_id.in_(list(chosen))).with_for_update()
    stored = {row.request_id: row for row in session.scalars(query)}
    fresh: list[UsageRecord] = []
    replacing: list[tuple[UsageEvent, UsageRecord]] = []
    for rid, e in chosen.items():
        row = stored.get(rid)
        if row is None:
            fresh.append(e)
        elif swept_row(row) and not e.swept:
            replacing.append((row, e))
            met[rid] = _of_record(e)
        elif e.swept and not swept_row(row):
            met[rid] = _of_row(row)
        # else: a replay of what is stored: dropped
    entries: dict[str, list[NewEntry]] = defaultdict(list)
    last_used: dict[str, float] = {}
    if fresh:  # a bulk INSERT (executemany): the ORM's unit of work costs more than the rest of the write
        session.execute(insert(UsageEvent), [_row_values(e) for e in fresh])
    for e in fresh:
        if e.decision == "allowed" and e.org_id:
            entries[e.org_id].append(_ledger_entry(e))
    for row, e in replacing:
        if row.organization_id:
            entries[row.organization_id] += _replacement_entries(session, row, e)
        _replace_row(row, e)
    for e in (*fresh, *(e for _, e in replacing)):
        if e.decision == "allowed" and e.key_id:
            last_used[e.key_id] = max(last_used.get(e.key_id, 0.0), e.started_at)
    session.flush()
    for org_id in sorted(entries):  # fixed order: two writers never wait on each other's locks in a cycle
        append_entries(session, org_id, entries[org_id])
    for key_id, at in last_used.items():
        when = datetime.fromtimestamp(at, UTC)
        session.execute(
            update(GatewayKey)
            .where(GatewayKey.key_id == key_id)
            .where((GatewayKey.last_used_at.is_(None)) | (GatewayKey.last_used_at < when))
            .values(last_used_at=when)
        )
    out.inserted, out.replaced = len(fresh), len(replacing)
    out.resettle = [settlement for settlement in met.values() if settlement is not None]
    return out


def _settlement(
    request_id: str, org_id: str | None, decision: str, reserved: int, tokens: int, nanos: int
) -> Settlement | None:
    """Real figures for the counters, if the request held a reservation (its id is the request id)."""
    if decision != "allowed" or not org_id or reserved <= 0:
        return None
    return Settlement(request_id, org_id, tokens, nanos)


def _of_record(e: UsageRecord) -> Settlement | None:
    reserved = e.reserved_tokens + e.reserved_nanos
    return _settlement(e.request_id, e.org_id, e.decision, reserved, e.usage.total_tokens, e.cost.total_nanos)


def _of_row(row: UsageEvent) -> Settlement | None:
    reserved = row.reserved_tokens + row.reserved_nanos
    return _settlement(row.request_id, row.organization_id, row.decision, reserved, row_tokens(row), row.cost_nanos)


def _replace_row(row: UsageEvent, e: UsageRecord) -> None:
    for key, value in _row_values(e).items():
        if key != "request_id":
            setattr(row, key, value)
    row.tags = {**dict(e.tags), SUPERSEDED_TAG: "1"}


def _replacement_entries(session: Session, row: UsageEvent, e: UsageRecord) -> list[NewEntry]:
    """Credit back what the sweep debited, then debit the real usage (the chain is append-only)."""
    swept = session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount_nanos), 0), func.max(LedgerEntry.seq)).where(
            LedgerEntry.organization_id == row.organization_id,
            LedgerEntry.kind == "sweep",
            LedgerEntry.ref == row.request_id,
        )
    ).one()
    out: list[NewEntry] = []
    if swept[1] is not None and int(swept[0]) != 0:
        out.append(
            NewEntry(
                kind="sweep",
                ref=row.request_id,
                amount_nanos=-int(swept[0]),
                data={"swept": True, "reverses": int(swept[1]), "reason": "the request's real usage arrived"},
            )
        )
    if e.decision == "allowed":
        out.append(_ledger_entry(e))
    return out


def _length(column: str) -> int | None:
    length: int | None = getattr(UsageEvent.__table__.c[column].type, "length", None)
    return length


# UsageRecord's text fields and the lengths of the columns they land in (None: unbounded text).
_TEXT_COLUMNS: dict[str, int | None] = {
    "org_id": _length("organization_id"),
    **{
        name: _length(name)
        for name in (
            "project_id",
            "client_id",
            "key_id",
            "provider",
            "api",
            "model_requested",
            "model_served",
            "decision",
            "deny_reason",
            "front_door",
            "error",
        )
    },
}


def _refused_content(exc: BaseException) -> bool:
    """The database refused what was sent (bad value, constraint), as opposed to being unreachable or failing."""
    if isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return False
    return isinstance(exc, DataError | IntegrityError | ProgrammingError | ValueError | TypeError | OverflowError)


def storable(e: UsageRecord) -> UsageRecord:
    """`e` with every text field fit for SQL: no NUL (PostgreSQL refuses it in text) and cut to its column's
    length. Provider- and client-controlled strings (served model, error text, tags) reach these columns."""
    changes: dict[str, Any] = {}
    for name, column in _TEXT_COLUMNS.items():
        value = getattr(e, name)
        if isinstance(value, str):
            fitted = _fit(value, column)
            if fitted != value:
                changes[name] = fitted
    tags = {_fit(k, 200): _fit(v, 2000) for k, v in e.tags.items()}
    if tags != e.tags:
        changes["tags"] = tags
    return replace(e, **changes) if changes else e


def _fit(value: str, length: int | None) -> str:
    clean = value.replace("\x00", "\ufffd")
    return clean if length is None or len(clean) <= length else clean[: length - 1] + "\u2026"


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _row_values(e: UsageRecord) -> dict[str, Any]:
    """The event's usage_events row, column by column."""
    u, c = e.usage, e.cost
    return dict(
        request_id=e.request_id,
        started_at=_ts(e.started_at),
        finished_at=_ts(e.finished_at),
        ttft_ms=e.ttft_ms,
        latency_ms=e.latency_ms,
        organization_id=e.org_id,
        project_id=e.project_id,
        client_id=e.client_id,
        key_id=e.key_id,
        provider=e.provider,
        api=e.api,
        model_requested=e.model_requested,
        model_served=e.model_served,
        stream=e.stream,
        status=e.status,
        decision=e.decision,
        deny_reason=e.deny_reason,
        input_tokens=u.input_tokens,
        cached_input_tokens=u.cached_input_tokens,
        cache_write_tokens=u.cache_write_tokens,
        output_tokens=u.output_tokens,
        reasoning_tokens=u.reasoning_tokens,
        usage_source=u.source.value,
        cost_input=c.input,
        cost_cached_input=c.cached_input,
        cost_cache_write=c.cache_write,
        cost_output=c.output,
        cost_nanos=c.total_nanos,
        unit=c.unit,
        rate_card_version=c.rate_card_version,
        reserved_tokens=e.reserved_tokens,
        reserved_nanos=e.reserved_nanos,
        front_door=e.front_door,
        tags=dict(e.tags),
        error=e.error,
    )


def _ledger_entry(e: UsageRecord) -> NewEntry:
    """The debit of an admitted request: ``usage``, or ``sweep`` for a sweeper's estimate."""
    u, c = e.usage, e.cost
    data: dict[str, Any] = {
        "project": e.project_id,
        "client": e.client_id,
        "key": e.key_id,
        "provider": e.provider,
        "model": e.model_served,
        "status": e.status,
        "source": u.source.value,
        "tokens": {
            "input": u.input_tokens,
            "cached_input": u.cached_input_tokens,
            "cache_write": u.cache_write_tokens,
            "output": u.output_tokens,
            "reasoning": u.reasoning_tokens,
        },
        "cost": {
            "input": str(c.input),
            "cached_input": str(c.cached_input),
            "cache_write": str(c.cache_write),
            "output": str(c.output),
            "unit": c.unit,
        },
        "rate_card_version": c.rate_card_version,
    }
    if e.swept:
        data |= {"swept": True, "reserved_tokens": e.reserved_tokens, "reserved_nanos": e.reserved_nanos}
        data["reason"] = e.error
    return NewEntry(kind="sweep" if e.swept else "usage", ref=e.request_id, amount_nanos=-c.total_nanos, data=data)
