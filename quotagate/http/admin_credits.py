"""Prepaid credits (seed 000) and the ledger trail.

A credit is appended to the organization's hash chain (kind ``credit``, ``ref`` ``<scope_type>:<scope_id>``)
and then added to the live balance counter, so a quota with ``prepaid: true`` on that scope admits
requests against it at once. Every admitted request debits the chain (kind ``usage``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from quotagate.errors import BackendUnavailable
from quotagate.http.auth import Admin, require_global
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError
from quotagate.http.idempotency import IdempotencyKey, fingerprint, respond, run_idempotent
from quotagate.http.models import Ref, Strict, Text, When
from quotagate.http.money import amount
from quotagate.http.paging import Cursor, Limit, Page, decode, encode
from quotagate.http.routing import JsonBodyRoute
from quotagate.money import MAX_NANOS, NANOS_PER_CENT, nanos_from_units
from quotagate.store.credits_repo import add_credit, ledger_page

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin", tags=["credits"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]

Amount = Annotated[
    str, Field(pattern=r"^[0-9]{1,7}(\.[0-9]{1,9})?$", description="currency units, decimal string, e.g. '25.50'")
]


class CreditCreate(Strict):
    scope_type: Literal["organization", "project", "client", "key"]
    scope_id: Ref = Field(description="organization id or slug, project id, client (sub-account) id or key id")
    amount: Amount | None = None
    amount_cents: Annotated[int, Field(gt=0, lt=MAX_NANOS // NANOS_PER_CENT)] | None = None
    note: Annotated[Text, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> CreditCreate:
        if (self.amount is None) == (self.amount_cents is None):
            raise ValueError("give exactly one of amount and amount_cents")
        return self

    @property
    def nanos(self) -> int:
        if self.amount_cents is not None:
            return self.amount_cents * NANOS_PER_CENT
        assert self.amount is not None
        return nanos_from_units(Decimal(self.amount))


class Credit(BaseModel):
    id: int = Field(description="ledger entry id")
    organization_id: str
    scope_type: str
    scope_id: str
    credit_id: str
    amount: str
    amount_nanos: int
    seq: int = Field(description="sequence number in the organization's ledger chain")
    note: str | None
    recorded_at: datetime
    hash: str
    balance_nanos: int | None = Field(
        description="live prepaid balance after this credit, when the counters hold it (else it is read "
        "from the ledger on first use)"
    )


class LedgerEntry(BaseModel):
    id: int
    organization_id: str
    seq: int
    kind: str
    ref: str | None
    amount_nanos: int = Field(description="+ credit, - debit")
    amount: str
    recorded_at: datetime
    data: dict[str, Any]
    prev_hash: str
    hash: str


@router.post("/credits", response_model=Credit, status_code=201)
async def load_credits(
    request: Request, ctx: Ctx, admin: Admin, body: CreditCreate, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Load prepaid credits to an organization (global admins), project, client (sub-account) or key."""
    if body.scope_type == "organization":
        require_global(admin, "Loading credits to an organization")
    nanos = body.nanos

    def work(session: Any) -> tuple[int, dict[str, Any]]:
        row = add_credit(
            session,
            scope_type=body.scope_type,
            scope_id=body.scope_id,
            amount_nanos=nanos,
            note=body.note,
            scope=admin.organization_id,
            actor=admin.actor,
        )
        return 201, Credit(**row, amount=amount(nanos), balance_nanos=None).model_dump(mode="json")

    outcome = await run_idempotent(ctx, admin, idempotency_key, fingerprint("POST", request.url.path, body), work)
    credit = outcome.body
    # After the commit, and again on a replay: the counter's watermark makes a repeat a no-op, so a
    # retry with the same Idempotency-Key heals a counter update that failed the first time.
    try:
        balance = await ctx.runtime.counters.add_credits(
            credit["organization_id"], credit["credit_id"], credit["amount_nanos"], credit["seq"]
        )
    except BackendUnavailable as exc:
        raise ApiError(
            503,
            "balance_not_updated",
            f"The credit is recorded (ledger seq {credit['seq']}) but the live balance could not be updated; "
            "retry with the same Idempotency-Key.",
        ) from exc
    return respond(replace(outcome, body={**credit, "balance_nanos": balance}))


@router.get("/ledger", response_model=Page[LedgerEntry])
async def ledger(
    ctx: Ctx,
    admin: Admin,
    organization: Annotated[Ref | None, Query(description="organization id or slug")] = None,
    kind: Annotated[Text | None, Query(max_length=32, description="credit, usage, admin, ...")] = None,
    ref: Annotated[Text | None, Query(max_length=200, description="e.g. `project:proj-demo` or a request id")] = None,
    since: When | None = None,
    until: When | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[LedgerEntry]:
    """The credit and debit trail, in append order (oldest first)."""
    items, last = await ctx.read(
        ledger_page,
        admin.organization_id,
        organization=organization,
        kind=kind,
        ref=ref,
        since=since,
        until=until,
        after=decode(cursor, int),
        limit=limit,
    )
    return Page(data=[LedgerEntry(**i, amount=amount(i["amount_nanos"])) for i in items], next_cursor=encode(last))
