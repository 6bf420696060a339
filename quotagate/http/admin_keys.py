"""Gateway keys: create for a client, list (never secrets), issue, rotate with grace, suspend, resume, revoke.

Credentials (``<key_id>.<secret>``) appear only in the response of the call that generates them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from quotagate.errors import ConfigError, ConflictError
from quotagate.http.auth import Admin
from quotagate.http.context import Context, context
from quotagate.http.errors import ERROR_RESPONSES, ApiError
from quotagate.http.idempotency import IdempotencyKey, fingerprint, respond, run_idempotent
from quotagate.http.models import Identifier, KeyId, Models, PathRef, Ref, Strict, Text, When
from quotagate.http.paging import Cursor, Limit, Page, decode, encode
from quotagate.http.routing import JsonBodyRoute
from quotagate.http.visibility import require_visible
from quotagate.identity.credentials import Credential
from quotagate.store import keys_repo
from quotagate.store.api_keys_repo import create_key, get_key, key_json, list_keys

router = APIRouter(route_class=JsonBodyRoute, prefix="/admin/keys", tags=["keys"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(context)]
MAX_GRACE_S = 30 * 86400


class Key(BaseModel):
    key_id: str
    organization_id: str
    project_id: str
    client_id: str
    tier: str | None
    status: str
    models: list[str] | None
    issued: bool
    expires_at: datetime | None
    issued_at: datetime | None
    last_used_at: datetime | None
    previous_valid_until: datetime | None
    managed_by: str
    created_at: datetime


class KeyWithCredential(Key):
    credential: str | None = Field(
        description="`<key_id>.<secret>`, shown once; null when this is an idempotent replay"
    )


class KeyCreate(Strict):
    client_id: Identifier
    key_id: KeyId | None = Field(default=None, description="default: generated `key-<hex>`")
    tier: Annotated[Text, Field(max_length=64)] | None = None
    models: Models | None = Field(default=None, description="the key's own model allowlist")
    expires_at: When | None = None


class KeyIssue(Strict):
    expires_at: When | None = None


class KeyRotate(Strict):
    grace_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_S)] = 3600


def _future(when: datetime | None) -> None:
    if when is not None and when <= datetime.now(UTC):
        raise ApiError(422, "validation_failed", "expires_at must be in the future")


def _with_credential(row: dict[str, Any], credential: Credential) -> dict[str, Any]:
    return KeyWithCredential(**row, credential=str(credential)).model_dump(mode="json")


def _as_conflict(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Lifecycle refusals (rotating a suspended key, issuing a revoked one) are state conflicts, not bad input."""

    def run(session: Any) -> Any:
        try:
            return fn(session)
        except ConfigError as exc:
            raise ConflictError(str(exc)) from exc

    return run


@router.get("", response_model=Page[Key])
async def list_gateway_keys(
    ctx: Ctx,
    admin: Admin,
    organization: Annotated[Ref | None, Query(description="organization id or slug")] = None,
    client_id: Annotated[Ref | None, Query()] = None,
    status: Literal["active", "suspended", "revoked", "disabled"] | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[Key]:
    def run(session: Any) -> tuple[list[dict[str, Any]], str | None]:
        require_visible(session, admin.organization_id, client_id=client_id)
        return list_keys(
            session,
            admin.organization_id,
            organization=organization,
            client_id=client_id,
            status=status,
            after=decode(cursor, str),
            limit=limit,
        )

    items, last = await ctx.read(run)
    return Page(data=[Key(**i) for i in items], next_cursor=encode(last))


@router.post("", response_model=KeyWithCredential, status_code=201)
async def create_gateway_key(
    request: Request, ctx: Ctx, admin: Admin, body: KeyCreate, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """A new key for a client; the credential is in this response only."""
    _future(body.expires_at)

    def work(session: Any) -> tuple[int, dict[str, Any]]:
        row, credential = create_key(
            session,
            ctx.hasher,
            client_id=body.client_id,
            key_id=body.key_id,
            tier=body.tier,
            models=body.models,
            expires_at=body.expires_at,
            scope=admin.organization_id,
            actor=admin.actor,
        )
        return 201, _with_credential(row, credential)

    sha = fingerprint("POST", request.url.path, body)
    return respond(await run_idempotent(ctx, admin, idempotency_key, sha, work, secret_fields=("credential",)))


@router.get("/{key_id}", response_model=Key)
async def get_gateway_key(ctx: Ctx, admin: Admin, key_id: PathRef) -> Key:
    return Key(**await ctx.read(lambda s: key_json(get_key(s, key_id, admin.organization_id))))


@router.post("/{key_id}/issue", response_model=KeyWithCredential)
async def issue_gateway_key(
    request: Request,
    ctx: Ctx,
    admin: Admin,
    key_id: PathRef,
    body: KeyIssue | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Generate the secret of a key declared in the manifest (or replace a key's secret at once)."""
    expires = body.expires_at if body else None
    _future(expires)

    def work(session: Any) -> tuple[int, dict[str, Any]]:
        get_key(session, key_id, admin.organization_id)
        # This endpoint's documented contract is "replace at once"; `keys issue` on the CLI asks for --replace.
        credential = keys_repo.issue_key(
            session, ctx.hasher, key_id, actor=admin.actor, expires_at=expires, replace=True
        )
        return 200, _with_credential(key_json(get_key(session, key_id, None)), credential)

    sha = fingerprint("POST", request.url.path, body)
    outcome = await run_idempotent(ctx, admin, idempotency_key, sha, _as_conflict(work), secret_fields=("credential",))
    return respond(outcome)


@router.post("/{key_id}/rotate", response_model=KeyWithCredential)
async def rotate_gateway_key(
    request: Request,
    ctx: Ctx,
    admin: Admin,
    key_id: PathRef,
    body: KeyRotate | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """A new secret; the previous one keeps working for `grace_seconds` (default 3600)."""
    grace = timedelta(seconds=body.grace_seconds if body else 3600)

    def work(session: Any) -> tuple[int, dict[str, Any]]:
        get_key(session, key_id, admin.organization_id)
        credential = keys_repo.rotate_key(session, ctx.hasher, key_id, actor=admin.actor, grace=grace)
        return 200, _with_credential(key_json(get_key(session, key_id, None)), credential)

    sha = fingerprint("POST", request.url.path, body)
    outcome = await run_idempotent(ctx, admin, idempotency_key, sha, _as_conflict(work), secret_fields=("credential",))
    return respond(outcome)


def _status_route(verb: str, doc: str) -> None:
    async def change(ctx: Ctx, admin: Admin, key_id: PathRef) -> Key:
        def work(session: Any) -> dict[str, Any]:
            get_key(session, key_id, admin.organization_id)
            keys_repo.set_key_status(session, key_id, verb, actor=admin.actor)
            return key_json(get_key(session, key_id, None))

        return Key(**await ctx.write(_as_conflict(work)))

    change.__doc__ = doc
    router.add_api_route(
        f"/{{key_id}}/{verb}", change, methods=["POST"], response_model=Key, name=f"{verb}_gateway_key"
    )


_status_route("suspend", "Stop the key until resumed (takes effect in every process within a second).")
_status_route("resume", "Re-enable a suspended key.")
_status_route("revoke", "Disable the key for good; a revoked key stays revoked even if the manifest says active.")
