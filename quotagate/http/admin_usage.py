"""Usage reports: admitted requests grouped by organization, project, client, key, model, day, ...

Totals are sums of the same integer nanos as the ledger's usage debits, so they match it exactly.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from quotagate.http.auth import Admin
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError, Problem
from quotagate.http.models import Ref, Text, When
from quotagate.http.money import amount
from quotagate.http.routing import JsonBodyRoute
from quotagate.store.reports import GROUPS, MEASURES, Report, ReportQuery, usage_report
from quotagate.store.tenancy_repo import find_org

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin", tags=["usage"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]


class UsageReport(BaseModel):
    group_by: list[str]
    rows: list[dict[str, str | int]]
    totals: dict[str, str | int]


def _group_by(text: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or len(set(groups)) != len(groups):
        problem = Problem(path="query.group_by", message=f"comma-separated, each once, from {', '.join(GROUPS)}")
        raise ApiError(422, "validation_failed", "The request is invalid.", details=[problem])
    return groups


def _csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*report.group_by, *MEASURES, "cost"])
    for row in report.rows:
        writer.writerow([*(row[g] for g in report.group_by), *(row[m] for m in MEASURES), amount(row["cost_nanos"])])
    blank = ["TOTAL", *[""] * (len(report.group_by) - 1)] if report.group_by else []
    writer.writerow([*blank, *(report.totals[m] for m in MEASURES), amount(report.totals["cost_nanos"])])
    return out.getvalue()


@router.get(
    "/usage",
    response_model=UsageReport,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def usage(
    ctx: Ctx,
    admin: Admin,
    group_by: Annotated[Text, Query(max_length=200, description=f"comma-separated: {', '.join(GROUPS)}")] = "",
    since: When | None = None,
    until: When | None = None,
    organization: Annotated[Ref | None, Query(description="organization id or slug")] = None,
    include_denied: bool = False,
    format: Literal["json", "csv"] = "json",
) -> UsageReport | Response:
    """Tokens and exact cost (`cost_nanos` integer, `cost` decimal string), grouped; `format=csv` for a
    spreadsheet (last row: totals)."""
    groups = _group_by(group_by)

    def run(session: Any) -> Report:
        org_id = admin.organization_id
        if organization is not None:
            org_id = find_org(session, organization, admin.organization_id).id
        query = ReportQuery(groups, since, until, org_id=org_id, include_denied=include_denied)
        return usage_report(session, query)

    report = await ctx.read(run)
    if format == "csv":
        return Response(_csv(report), media_type="text/csv; charset=utf-8")
    return UsageReport(
        group_by=list(groups),
        rows=[{**r, "cost": amount(r["cost_nanos"])} for r in report.rows],
        totals={**report.totals, "cost": amount(report.totals["cost_nanos"])},
    )
