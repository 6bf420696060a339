"""Idempotency keys under concurrency: identical POSTs sent at the same moment act once and answer alike;
the same key with another request is a clear 409. On SQLite the duplicates queue on the write lock; on
PostgreSQL they race on the key's row and the loser replays the winner (the IntegrityError path)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from quotagate.gateway.outcome import Allow
from tests.http.conftest import Api, call_gateway

CONCURRENT = 4


async def at_once(api: Api, path: str, body: Any, key: str) -> list[httpx.Response]:
    headers = {"Idempotency-Key": key}
    return list(await asyncio.gather(*(api.post(path, body, headers=headers) for _ in range(CONCURRENT))))


def one_action(replies: list[httpx.Response], status: int, secret: str | None) -> dict[str, Any]:
    """Every reply has the first one's status and body (bar its one-time secret); exactly one acted."""
    assert [r.status_code for r in replies] == [status] * CONCURRENT, [r.text for r in replies]
    first = [r for r in replies if "idempotent-replayed" not in r.headers]
    assert len(first) == 1, "more than one request acted"
    body: dict[str, Any] = first[0].json()
    for r in replies:
        if r is not first[0]:
            assert r.headers["idempotent-replayed"] == "true"
            assert r.json() == ({**body, secret: None} if secret else body)
    if secret:
        assert body[secret]
    return body


async def admin_actions(api: Api, action: str, target: str) -> list[dict[str, Any]]:
    entries = (await api.get("/admin/ledger", params={"kind": "admin", "limit": 500})).json()["data"]
    return [e for e in entries if e["data"]["action"] == action and e["data"]["target_id"] == target]


async def conflict(api: Api, path: str, body: Any, key: str) -> None:
    r = await api.post(path, body, headers={"Idempotency-Key": key})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict"), r.text
    assert f"Idempotency-Key {key!r} was already used with a different request" in r.json()["error"]["message"]


async def test_a_sub_account_is_created_once(api_db: Api) -> None:
    body = {"name": "acme-corp", "spend_cap_cents": 500, "organization": "demo"}
    sa = one_action(await at_once(api_db, "/v1/sub-accounts", body, "signup-1"), 201, "key")
    listed = (await api_db.get("/v1/sub-accounts")).json()["data"]
    assert [s["id"] for s in listed] == [sa["id"]]
    assert isinstance(await call_gateway(api_db.runtime, sa["key"], usage=None), Allow)
    await conflict(api_db, "/v1/sub-accounts", {**body, "spend_cap_cents": 501}, "signup-1")
    assert len((await api_db.get("/v1/sub-accounts")).json()["data"]) == 1


async def test_credits_are_loaded_once(api_db: Api) -> None:
    body = {"scope_type": "project", "scope_id": "proj-demo", "amount": "1.25", "note": "top-up"}
    credit = one_action(await at_once(api_db, "/admin/credits", body, "topup-1"), 201, None)
    entries = (await api_db.get("/admin/ledger", params={"kind": "credit"})).json()["data"]
    assert [(e["seq"], e["amount_nanos"]) for e in entries] == [(credit["seq"], 1_250_000_000)]
    await conflict(api_db, "/admin/credits", {**body, "amount": "1.26"}, "topup-1")
    assert len((await api_db.get("/admin/ledger", params={"kind": "credit"})).json()["data"]) == 1


async def test_keys_are_created_issued_and_rotated_once(api_db: Api) -> None:
    body = {"client_id": "client-demo", "key_id": "ci-bot"}
    created = one_action(await at_once(api_db, "/admin/keys", body, "ci-1"), 201, "credential")
    listed = (await api_db.get("/admin/keys", params={"client_id": "client-demo"})).json()["data"]
    assert sorted(k["key_id"] for k in listed) == ["ci-bot", "demo-key"] and created["key_id"] == "ci-bot"
    await conflict(api_db, "/admin/keys", {**body, "key_id": "ci-bot-2"}, "ci-1")

    for verb, first, other in (
        ("issue", None, {"expires_at": "2999-01-01T00:00:00Z"}),
        ("rotate", {"grace_seconds": 60}, {"grace_seconds": 0}),
    ):
        path = f"/admin/keys/demo-key/{verb}"
        key = one_action(await at_once(api_db, path, first, f"{verb}-1"), 200, "credential")
        assert len(await admin_actions(api_db, f"key.{verb}", "demo-key")) == 1, verb
        assert isinstance(await call_gateway(api_db.runtime, key["credential"], usage=None), Allow)
        await conflict(api_db, path, other, f"{verb}-1")
        assert len(await admin_actions(api_db, f"key.{verb}", "demo-key")) == 1, verb
