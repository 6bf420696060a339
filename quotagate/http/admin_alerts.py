"""Alert receivers, rules and firings of an organization (docs/governance.md "Alerts").

Bodies are the manifest's receiver and rule, minus the name the path carries, validated by the manifest's
own models (quotagate/manifest/schema.py), so the API and the manifest accept exactly the same things.
Objects put here are API-managed (a manifest apply leaves them alone); the manifest's are read-only here
(409). DELETE disables: firings and the ledger keep referring to it. A receiver's signing secret is an
``env:VAR`` reference the gateway reads at delivery; it is never returned.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from quotagate.errors import ConflictError, NotFoundError
from quotagate.http.auth import Admin, organization_for
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError, Problem
from quotagate.http.models import PathRef, Ref, Strict
from quotagate.http.paging import Cursor, Limit, Page, decode, encode
from quotagate.http.routing import JsonBodyRoute
from quotagate.manifest.checks import scope_reference
from quotagate.manifest.load import format_path
from quotagate.manifest.schema import AlertReceiver as ReceiverSpec
from quotagate.manifest.schema import AlertRule as RuleSpec
from quotagate.store import alerts_repo as repo
from quotagate.store.admin_tokens_repo import AdminPrincipal
from quotagate.store.tenancy_repo import find_org

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin/alerts", tags=["alerts"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]
Organization = Annotated[Ref | None, Query(description="organization id or slug; required with a global admin token")]


def _no_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_no_nul(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nul(v) for v in value)
    return True


class _Body(Strict):
    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # PostgreSQL text cannot hold NUL: bad input, never a database error.
        if not _no_nul(data):
            raise ValueError("must not contain NUL characters")
        return data


def _body_of(spec: type[BaseModel], identity: str) -> type[_Body]:
    """The manifest model's fields, without the identity the path carries."""
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in spec.model_fields.items() if n != identity}
    return create_model(f"{spec.__name__}Body", __base__=_Body, **fields)


class AlertReceiverBody(_body_of(ReceiverSpec, "name")):  # type: ignore[misc]
    """A webhook: `format` slack | json (json bodies are HMAC-signed with `signing_secret`, an `env:VAR`)."""


class AlertRuleBody(_body_of(RuleSpec, "rule_id")):  # type: ignore[misc]
    """A rule: `kind` spend_cap | tpm_saturation (`thresholds`), credit_balance (`below`), spend_anomaly."""


class Receiver(BaseModel):
    organization_id: str
    name: str
    format: str
    url: str = Field(description="as written: an http(s) URL or an env:VAR reference")
    signed: bool = Field(description="deliveries carry an HMAC signature (the secret's reference is not shown)")
    status: str
    managed_by: str
    created_at: datetime
    updated_at: datetime


class Rule(BaseModel):
    organization_id: str
    rule_id: str
    kind: str
    scope_type: str
    scope_id: str
    params: dict[str, Any] = Field(description="thresholds, or below_nanos, or the anomaly settings (exact nanos)")
    receivers: list[str] = Field(description="empty: every receiver of the organization")
    notes: str | None
    status: str
    managed_by: str
    created_at: datetime
    updated_at: datetime


class Delivery(BaseModel):
    receiver: str
    status: str = Field(description="pending | delivered | failed")
    attempts: int
    error: str | None


class Firing(BaseModel):
    id: int
    organization_id: str
    rule_id: str = Field(description="the rule's id within the organization")
    subject: str = Field(description="the quota measured, or empty")
    threshold: str
    period: str
    fired_at: datetime
    delivered: bool = Field(description="false: a higher threshold crossed at the same time was sent instead")
    message: str
    observed: dict[str, Any]
    deliveries: list[Delivery]


def _receiver(row: dict[str, Any]) -> Receiver:
    fields = {k: v for k, v in row.items() if k != "signing_secret"}
    return Receiver(**fields, signed=row["signing_secret"] is not None)


def _rule(row: dict[str, Any]) -> Rule:
    return Rule(**row)


def _spec(model: type[BaseModel], identity: tuple[str, str], body: BaseModel) -> Any:
    """The manifest object: its cross-field rules (a json receiver is signed, a rule's fields fit its kind)."""
    name, value = identity
    try:
        return model.model_validate({name: value, **body.model_dump(exclude_unset=True)})
    except ValidationError as exc:
        problems = [
            Problem(
                path=f"path.{name}" if err["loc"][:1] == (name,) else format_path(("body", *err["loc"])),
                message=str(err["msg"]).removeprefix("Value error, "),
            )
            for err in exc.errors()
        ]
        raise ApiError(422, "validation_failed", "The request is invalid.", details=problems) from exc


def _scope_fields(rule: RuleSpec) -> None:
    """The id field of the rule's scope is given and no other is (the manifest's check; the repository
    answers 404 for an id the organization does not have)."""
    problems = [Problem(path=path, message=message) for path, message in scope_reference("body", rule)]
    if problems:
        raise ApiError(422, "validation_failed", "The request is invalid.", details=problems)


def _api_managed(session: Any, org_id: str, kind: str, name: str, *, must_exist: bool) -> None:
    """The manifest is the source of truth of what it declares (as for tenancy and quotas): 409 here."""
    try:
        current = repo.get_alert_object(session, org_id, kind, name)
    except NotFoundError:
        if must_exist:
            raise
        return
    if current["managed_by"] != "api":
        raise ConflictError(
            f"alert {kind} {name!r} is managed by the manifest; change the manifest and apply it instead"
        )


def _put(
    session: Any,
    put: Callable[[Any, str, Any, str], dict[str, Any]],
    org_id: str,
    kind: str,
    name: str,
    spec: Any,
    actor: str,
) -> dict[str, Any]:
    _api_managed(session, org_id, kind, name, must_exist=False)
    return put(session, org_id, spec, actor)


def _disable(session: Any, org_id: str, kind: str, name: str, actor: str) -> dict[str, Any]:
    _api_managed(session, org_id, kind, name, must_exist=True)
    return repo.disable_alert_object(session, org_id, kind, name, actor)


async def _org(ctx: Context, admin: AdminPrincipal, organization: str | None) -> str:
    given = organization_for(admin, organization)
    org = await ctx.read(lambda s: find_org(s, given, admin.organization_id))
    return org.id


def _page(items: list[Any], key: str, after: str | None, limit: int) -> tuple[list[Any], str | None]:
    rest = [i for i in items if after is None or i[key] > after]
    page = rest[:limit]
    return page, (page[-1][key] if len(rest) > limit else None)


# Receivers


@router.get("/receivers", response_model=Page[Receiver])
async def list_receivers(
    ctx: Ctx, admin: Admin, organization: Organization = None, limit: Limit = 100, cursor: Cursor = None
) -> Page[Receiver]:
    org_id = await _org(ctx, admin, organization)
    rows = await ctx.read(repo.list_receivers, org_id)
    page, last = _page(rows, "name", decode(cursor, str), limit)
    return Page(data=[_receiver(r) for r in page], next_cursor=encode(last))


@router.get("/receivers/{name}", response_model=Receiver)
async def get_receiver(ctx: Ctx, admin: Admin, name: PathRef, organization: Organization = None) -> Receiver:
    org_id = await _org(ctx, admin, organization)
    return _receiver(await ctx.read(repo.get_alert_object, org_id, "receiver", name))


@router.put("/receivers/{name}", response_model=Receiver)
async def put_receiver(
    ctx: Ctx, admin: Admin, name: PathRef, body: AlertReceiverBody, organization: Organization = None
) -> Receiver:
    """Create or replace (and re-enable) a receiver."""
    spec: ReceiverSpec = _spec(ReceiverSpec, ("name", name), body)
    org_id = await _org(ctx, admin, organization)
    return _receiver(await ctx.write(_put, repo.put_receiver, org_id, "receiver", name, spec, admin.actor))


@router.delete("/receivers/{name}", response_model=Receiver)
async def disable_receiver(ctx: Ctx, admin: Admin, name: PathRef, organization: Organization = None) -> Receiver:
    """Disable: nothing more is sent to it (pending deliveries to it fail)."""
    org_id = await _org(ctx, admin, organization)
    return _receiver(await ctx.write(_disable, org_id, "receiver", name, admin.actor))


# Rules


@router.get("/rules", response_model=Page[Rule])
async def list_rules(
    ctx: Ctx, admin: Admin, organization: Organization = None, limit: Limit = 100, cursor: Cursor = None
) -> Page[Rule]:
    org_id = await _org(ctx, admin, organization)
    rows = await ctx.read(repo.list_rules, org_id)
    page, last = _page(rows, "rule_id", decode(cursor, str), limit)
    return Page(data=[_rule(r) for r in page], next_cursor=encode(last))


@router.get("/rules/{rule_id}", response_model=Rule)
async def get_rule(ctx: Ctx, admin: Admin, rule_id: PathRef, organization: Organization = None) -> Rule:
    org_id = await _org(ctx, admin, organization)
    return _rule(await ctx.read(repo.get_alert_object, org_id, "rule", rule_id))


@router.put("/rules/{rule_id}", response_model=Rule)
async def put_rule(
    ctx: Ctx, admin: Admin, rule_id: PathRef, body: AlertRuleBody, organization: Organization = None
) -> Rule:
    """Create or replace (and re-enable) a rule; it fires from the evaluator's next tick."""
    spec: RuleSpec = _spec(RuleSpec, ("rule_id", rule_id), body)
    _scope_fields(spec)
    org_id = await _org(ctx, admin, organization)
    return _rule(await ctx.write(_put, repo.put_rule, org_id, "rule", rule_id, spec, admin.actor))


@router.delete("/rules/{rule_id}", response_model=Rule)
async def disable_rule(ctx: Ctx, admin: Admin, rule_id: PathRef, organization: Organization = None) -> Rule:
    org_id = await _org(ctx, admin, organization)
    return _rule(await ctx.write(_disable, org_id, "rule", rule_id, admin.actor))


# Firings


@router.get("/firings", response_model=Page[Firing])
async def list_firings(
    ctx: Ctx, admin: Admin, organization: Organization = None, limit: Limit = 100, cursor: Cursor = None
) -> Page[Firing]:
    """Thresholds crossed, newest first, each with the state of its deliveries."""
    org_id = await _org(ctx, admin, organization)
    rows = await ctx.read(repo.list_firings, org_id, limit + 1, decode(cursor, int))
    more = len(rows) > limit
    data = [Firing(**{**r, "rule_id": r["rule_id"].split(":", 1)[1]}) for r in rows[:limit]]
    return Page(data=data, next_cursor=encode(data[-1].id) if more else None)
