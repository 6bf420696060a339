"""Durable figures that seed spend and credit counters when a counter backend starts empty."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quotagate.limits.model import Baseline
from quotagate.models_catalog import split_model
from quotagate.policy import counter_id
from quotagate.store.database import Database
from quotagate.store.tables import LedgerEntry, Quota, UsageEvent

_SCOPE_COLUMN = {
    "organization": UsageEvent.organization_id,
    "project": UsageEvent.project_id,
    "client": UsageEvent.client_id,
    "key": UsageEvent.key_id,
}


class StoreBaseline:
    """BaselineSource over SQL: spend = charged cost of the scope's events this month (models the quota
    covers); credits = credits loaded minus charged cost since the scope's first credit."""

    def __init__(self, db: Database, timezone: str) -> None:
        self._db = db
        self._zone = ZoneInfo(timezone)

    async def baseline(self, org_id: str, spend_ids: list[str], credit_ids: list[str], month: str) -> Baseline:
        return await asyncio.to_thread(self.read, org_id, spend_ids, credit_ids, month)

    def read(self, org_id: str, spend_ids: list[str], credit_ids: list[str], month: str) -> Baseline:
        with self._db.read() as session:
            spend = self._spend(session, org_id, set(spend_ids), month)
            credits, marks = self._credits(session, org_id, credit_ids)
        return Baseline(spend_nanos=spend, credit_nanos=credits, credit_watermark=marks)

    def _month_bounds(self, month: str) -> tuple[datetime, datetime]:
        year, mon = (int(p) for p in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=self._zone)
        end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=self._zone)
        return start, end

    def _spend(self, session: Session, org_id: str, wanted: set[str], month: str) -> dict[str, int]:
        start, end = self._month_bounds(month)
        out: dict[str, int] = {}
        for quota in session.scalars(select(Quota).where(Quota.organization_id == org_id)):
            cid = _counter_id(quota)
            if cid not in wanted:
                continue
            query = (
                select(func.coalesce(func.sum(UsageEvent.cost_nanos), 0))
                .where(_SCOPE_COLUMN[quota.scope_type] == quota.scope_id)
                .where(UsageEvent.started_at >= start, UsageEvent.started_at < end)
                .where(UsageEvent.decision == "allowed")
            )
            if quota.limited_models is not None:
                models = {split_model(m)[1] for m in quota.limited_models}
                query = query.where(UsageEvent.model_served.in_(models) | UsageEvent.model_requested.in_(models))
            out[cid] = int(session.scalar(query) or 0)
        for cid in wanted - out.keys():
            out[cid] = 0
        return out

    def _credits(self, session: Session, org_id: str, credit_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        balances: dict[str, int] = {}
        marks: dict[str, int] = {}
        for credit_id in credit_ids:
            scope_type, _, scope_id = credit_id.partition(":")
            rows = session.execute(
                select(LedgerEntry.seq, LedgerEntry.amount_nanos, LedgerEntry.recorded_at)
                .where(
                    LedgerEntry.organization_id == org_id, LedgerEntry.kind == "credit", LedgerEntry.ref == credit_id
                )
                .order_by(LedgerEntry.seq)
            ).all()
            if not rows:
                balances[credit_id], marks[credit_id] = 0, 0
                continue
            first = rows[0][2]
            spent = session.scalar(
                select(func.coalesce(func.sum(UsageEvent.cost_nanos), 0))
                .where(_SCOPE_COLUMN[scope_type] == scope_id)
                .where(UsageEvent.started_at >= first, UsageEvent.decision == "allowed")
            )
            balances[credit_id] = sum(int(r[1]) for r in rows) - int(spent or 0)
            marks[credit_id] = int(rows[-1][0])
        return balances, marks


def _counter_id(quota: Quota) -> str:
    from quotagate.snapshot import QuotaView

    view = QuotaView(quota.id, quota.organization_id, quota.scope_type, quota.scope_id, enforce=True)
    return counter_id(view)
