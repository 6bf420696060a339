"""Who may call what.

* Admin endpoints take an admin token (``Authorization: Bearer <token_id>.<secret>``), global or scoped to
  one organization; an organization admin sees only its organization (anything else is 404).
* Portal endpoints (``/api/balance``, ``/v1/models``) take a gateway key, in the headers the gateway
  accepts, and answer only about that key.

The two never cross: an admin token is not a gateway key (it is not in the key table, and its hash is
domain-separated) and a gateway key is not an admin token.

Failed attempts count against the caller's address like those at Check (identity/throttle.py): past the limit,
further failures are 429. The address is the peer's, or X-Forwarded-For's when the peer is a trusted proxy
(behind Envoy, list Envoy's address in QUOTAGATE_TRUSTED_PROXIES, or every caller counts as Envoy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from quotagate.errors import BackendUnavailable
from quotagate.governance.ip import client_address
from quotagate.http.context import Context, context
from quotagate.http.errors import ApiError
from quotagate.identity.authenticate import AuthFailure, Identity, authenticate
from quotagate.identity.credentials import credential_from_headers
from quotagate.metrics import BACKEND_ERRORS
from quotagate.store.admin_tokens_repo import AdminPrincipal, verify_admin_token

_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="An admin token `<token_id>.<secret>` from `quotagate admin-token issue`.",
)
_gateway_bearer = HTTPBearer(auto_error=False, scheme_name="GatewayKey", description="A gateway key.")
_gateway_x_api_key = APIKeyHeader(name="x-api-key", auto_error=False, scheme_name="GatewayKeyHeader")
_gateway_x_api_token = APIKeyHeader(name="X-API-Token", auto_error=False, scheme_name="GatewayTokenHeader")

log = logging.getLogger(__name__)
CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def _refused(request: Request, ctx: Context, status: int, code: str, message: str) -> ApiError:
    """The refusal of a credential that did not verify, counted against the caller's address: 429 past the limit."""
    peer = request.client.host if request.client else None
    addr = client_address(peer, request.headers.get("x-forwarded-for"), ctx.settings.trusted_proxies)
    try:
        verdict = await ctx.runtime.auth_throttle.failed(addr, time.time())
    except BackendUnavailable as exc:  # refused all the same
        BACKEND_ERRORS.labels("auth_throttle").inc()
        log.warning("failed-authentication throttle unavailable, answering %d: %s", status, exc)
    else:
        if verdict.throttled:
            return ApiError(
                429,
                "auth_throttled",
                f"Too many failed authentication attempts from this address; retry after {verdict.retry_after_s}s.",
                headers={"Retry-After": str(verdict.retry_after_s), "x-should-retry": "false"},
            )
    return ApiError(status, code, message, headers=CHALLENGE if status == 401 else None)


async def admin_principal(
    request: Request,
    ctx: Annotated[Context, Depends(context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_admin_bearer)],
) -> AdminPrincipal:
    if credentials is None:
        raise ApiError(
            401, "missing_credential", "Send an admin token as 'Authorization: Bearer <token>'.", headers=CHALLENGE
        )
    principal = await asyncio.to_thread(
        verify_admin_token, ctx.db, ctx.hasher, credentials.credentials, datetime.now(UTC)
    )
    if principal is None:
        raise await _refused(request, ctx, 401, "invalid_admin_token", "Invalid or revoked admin token.")
    return principal


Admin = Annotated[AdminPrincipal, Depends(admin_principal)]


def require_global(principal: AdminPrincipal, what: str = "This endpoint") -> None:
    """The organization itself (its record, its quotas, its credits) and the deployment belong to the
    operator: an organization admin manages what is inside it, and cannot lift limits set on it."""
    if principal.organization_id is not None:
        raise ApiError(403, "forbidden", f"{what} needs a global admin token.")


def organization_for(principal: AdminPrincipal, given: str | None) -> str:
    """The organization a create acts in: an organization admin's own; a global admin must name one."""
    if given is not None:
        return given
    if principal.organization_id is None:
        raise ApiError(422, "validation_failed", "A global admin token must name the 'organization'.")
    return principal.organization_id


_AUTH_MESSAGES = {
    AuthFailure.MISSING_CREDENTIAL: "No gateway key provided. Send it as 'Authorization: Bearer <key>'.",
    AuthFailure.INVALID_CREDENTIAL: "Invalid gateway key.",
}


async def gateway_identity(
    request: Request,
    ctx: Annotated[Context, Depends(context)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_gateway_bearer)],
    _x_api_key: Annotated[str | None, Security(_gateway_x_api_key)],
    _x_api_token: Annotated[str | None, Security(_gateway_x_api_token)],
) -> Identity:
    # The security parameters only document the accepted headers; the gateway's own parser decides.
    headers = {name.lower(): value for name, value in request.headers.items()}
    outcome = authenticate(ctx.snapshot, ctx.hasher, credential_from_headers(headers), datetime.now(UTC))
    if isinstance(outcome, AuthFailure):
        message = _AUTH_MESSAGES.get(outcome, f"This gateway key is refused: {outcome.value.replace('_', ' ')}.")
        if outcome is AuthFailure.INVALID_CREDENTIAL:
            raise await _refused(request, ctx, outcome.status, outcome.value, message)
        raise ApiError(outcome.status, outcome.value, message, headers=CHALLENGE if outcome.status == 401 else None)
    return outcome


Gateway = Annotated[Identity, Depends(gateway_identity)]
