"""``Idempotency-Key`` on POSTs that create keys, sub-accounts or credits.

The same key from the same admin token with the same request returns the first response (status and
body) with ``Idempotent-Replayed: true``; with a different request it is 409. One-time secrets are never
stored, so a replayed body carries ``null`` where the first carried the secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from quotagate.http.context import Context
from quotagate.store.admin_tokens_repo import AdminPrincipal
from quotagate.store.idempotency_repo import Outcome, run_once

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Replays of the same request with this key return the first response instead of acting twice.",
    ),
]


def fingerprint(method: str, path: str, body: BaseModel | None) -> str:
    payload = {"method": method, "path": path, "body": body.model_dump(mode="json") if body is not None else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def run_idempotent(
    ctx: Context,
    principal: AdminPrincipal,
    key: str | None,
    request_sha256: str,
    work: Callable[[Any], tuple[int, dict[str, Any]]],
    *,
    secret_fields: tuple[str, ...] = (),
) -> Outcome:
    """`work(session)` -> (status, JSON body), once per idempotency key; without a key, simply once."""
    if key is None:
        status, body = await ctx.write(work)
        return Outcome(status, body, replayed=False)

    def stored(body: dict[str, Any]) -> dict[str, Any]:
        return {k: None if k in secret_fields else v for k, v in body.items()}

    outcome = await asyncio.to_thread(
        run_once,
        ctx.db,
        actor=principal.actor,
        key=key,
        request_sha256=request_sha256,
        work=work,
        stored_body=stored,
    )
    await ctx.refresh()
    return outcome


def respond(outcome: Outcome) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)
