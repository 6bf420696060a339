"""Drains spooled usage events into SQL in batches: usage rows, ledger debits, key last-use times.

Idempotent by request id (a replayed batch never double-counts). While the database is down the spool
grows on disk and the writer retries with backoff; every event lands once it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from quotagate.metering.record import UsageRecord
from quotagate.metrics import BACKEND_ERRORS, SPOOLED
from quotagate.store.database import Database
from quotagate.store.ledger_repo import NewEntry, append_entries
from quotagate.store.spool import Spool
from quotagate.store.tables import GatewayKey, UsageEvent

log = logging.getLogger(__name__)
BATCH = 500
ORPHAN_SCAN_S = 10.0


class UsageWriter:
    """The UsageSink of a gateway process: `record` appends to the spool; a thread drains it."""

    def __init__(self, db: Database, spool_dir: Path, *, interval_s: float = 0.05) -> None:
        self._db = db
        self._dir = spool_dir
        self._spool = Spool(spool_dir)
        self._interval = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_lock = threading.Lock()
        self.written = 0
        self.failures = 0
        self._last_orphan_scan = 0.0

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
        with self._drain_lock:
            total = 0
            while True:
                batch = self._spool.batch(BATCH)
                if not batch:
                    return total
                with self._db.transaction(immediate=True) as session:
                    write_events(session, [event for _, event in batch])
                self._spool.delete_through(batch[-1][0])
                total += len(batch)
                self.written += len(batch)

    def _adopt_orphans(self) -> None:
        self._last_orphan_scan = time.monotonic()
        for orphan in Spool.adopt_orphans(self._dir):
            log.info("adopting spool %s of a stopped process", orphan.path.name)
            while batch := orphan.batch(BATCH):
                with self._db.transaction(immediate=True) as session:
                    write_events(session, [event for _, event in batch])
                orphan.delete_through(batch[-1][0])
            orphan.close()


def write_events(session: Session, events: list[UsageRecord]) -> int:
    """Insert events not yet stored; append a ledger debit per admitted, metered event. Returns rows inserted."""
    by_id = {e.request_id: e for e in events}  # a batch may carry a replay of itself
    existing = set(session.scalars(select(UsageEvent.request_id).where(UsageEvent.request_id.in_(list(by_id)))))
    fresh = [e for rid, e in by_id.items() if rid not in existing]
    if not fresh:
        return 0
    session.add_all(_row(e) for e in fresh)
    debits: dict[str, list[NewEntry]] = defaultdict(list)
    last_used: dict[str, float] = {}
    for e in fresh:
        if e.decision == "allowed" and e.org_id:
            debits[e.org_id].append(_ledger_entry(e))
            if e.key_id:
                last_used[e.key_id] = max(last_used.get(e.key_id, 0.0), e.started_at)
    session.flush()
    for org_id in sorted(debits):  # fixed order: two writers never wait on each other's locks in a cycle
        append_entries(session, org_id, debits[org_id])
    for key_id, at in last_used.items():
        when = datetime.fromtimestamp(at, UTC)
        session.execute(
            update(GatewayKey)
            .where(GatewayKey.key_id == key_id)
            .where((GatewayKey.last_used_at.is_(None)) | (GatewayKey.last_used_at < when))
            .values(last_used_at=when)
        )
    return len(fresh)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _row(e: UsageRecord) -> UsageEvent:
    u, c = e.usage, e.cost
    return UsageEvent(
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
    u, c = e.usage, e.cost
    return NewEntry(
        kind="usage",
        ref=e.request_id,
        amount_nanos=-c.total_nanos,
        data={
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
        },
    )
