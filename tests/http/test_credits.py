"""Seed 000: an admin loads credits, every request debits them, the ledger shows the trail, and the key
sees its balance, spend, caps and remaining limits at /api/balance."""

from __future__ import annotations

from typing import Any

from quotagate.app import open_app
from quotagate.gateway.outcome import Allow
from quotagate.store.tables import UsageEvent
from tests.http.conftest import Api, bearer, call_gateway, denial, issue_key_credential, stored


async def balance_of(api: Api, credential: str) -> dict[str, Any]:
    r = await api.http.get("/api/balance", headers={"X-API-Token": credential})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_credits_load_then_requests_debit_them(api_db: Api) -> None:
    api, rt = api_db, api_db.runtime
    sa = (
        await api.post("/v1/sub-accounts", {"name": "prepaid", "spend_cap_cents": 1000, "organization": "demo"})
    ).json()
    quota = await api.post("/admin/quotas", {"scope_type": "client", "scope_id": sa["id"], "prepaid": True})
    assert quota.status_code == 201, quota.text
    key = sa["key"]
    refused = denial(await call_gateway(rt, key, usage=None))
    assert refused["error"]["code"] == "insufficient_quota" and "prepaid credit balance" in refused["error"]["message"]

    headers = {"Idempotency-Key": "topup-1"}
    credit = await api.post(
        "/admin/credits",
        {"scope_type": "client", "scope_id": sa["id"], "amount": "0.05", "note": "trial"},
        headers=headers,
    )
    assert credit.status_code == 201, credit.text
    c = credit.json()
    assert (c["amount"], c["amount_nanos"], c["credit_id"]) == ("0.05", 50_000_000, f"client:{sa['id']}")
    assert c["balance_nanos"] == 50_000_000  # the counter was seeded by the refused request, then credited
    replay = await api.post(
        "/admin/credits",
        {"scope_type": "client", "scope_id": sa["id"], "amount": "0.05", "note": "trial"},
        headers=headers,
    )
    assert replay.headers["idempotent-replayed"] == "true" and replay.json()["seq"] == c["seq"]
    assert replay.json()["balance_nanos"] == 50_000_000  # not credited twice

    allowed = await call_gateway(rt, key, max_tokens=100, usage=(1000, 500))
    assert isinstance(allowed, Allow)
    stored(rt)
    app = open_app()
    with app.db.read() as session:
        cost = session.get_one(UsageEvent, allowed.ticket.request_id).cost_nanos
    app.close()
    assert cost > 0

    mine = await balance_of(api, key)
    [credits] = mine["credits"]
    assert credits == {
        "scope_type": "client",
        "scope_id": sa["id"],
        "loaded": {"nanos": 50_000_000, "amount": "0.05"},
        "balance": {"nanos": 50_000_000 - cost, "amount": credits["balance"]["amount"]},
        "live": True,
    }
    assert mine["spend_this_period"]["nanos"] == cost
    assert mine["balance"]["nanos"] == 50_000_000 - cost  # the credits are tighter than the $10 cap
    prepaid = next(limit for limit in mine["limits"] if limit["prepaid"])
    assert prepaid["credit_balance"]["nanos"] == 50_000_000 - cost
    cap = next(limit for limit in mine["limits"] if limit["scope_type"] == "client" and not limit["prepaid"])
    assert cap["spend_limit"]["nanos"] == 10 * 10**9 and cap["spend_remaining"]["nanos"] == 10 * 10**9 - cost

    trail = (await api.get("/admin/ledger", params={"organization": "demo"})).json()["data"]
    mine_only = [e for e in trail if e["ref"] in (c["credit_id"], allowed.ticket.request_id)]
    assert [(e["kind"], e["amount_nanos"]) for e in mine_only] == [("credit", 50_000_000), ("usage", -cost)]
    assert sum(e["amount_nanos"] for e in mine_only) == credits["balance"]["nanos"]
    credits_only = (await api.get("/admin/ledger", params={"kind": "credit"})).json()["data"]
    assert [e["ref"] for e in credits_only] == [c["credit_id"]] and credits_only[0]["data"]["note"] == "trial"
    assert credits_only[0]["amount"] == "0.05"


async def test_credits_without_a_prepaid_quota_are_read_from_the_ledger(api: Api) -> None:
    credential = await issue_key_credential(api)
    credit = await api.post("/admin/credits", {"scope_type": "organization", "scope_id": "demo", "amount_cents": 250})
    assert credit.status_code == 201 and credit.json()["balance_nanos"] is None  # no live counter to update
    allowed = await call_gateway(api.runtime, credential, usage=(100, 100))
    assert isinstance(allowed, Allow)
    stored(api.runtime)
    mine = await balance_of(api, credential)
    [org] = mine["credits"]
    assert org["live"] is False and org["loaded"]["nanos"] == 2_500_000_000
    assert org["balance"]["nanos"] == 2_500_000_000 - mine["spend_this_period"]["nanos"]
    assert mine["key_id"] == "demo-key" and mine["organization"] == "demo" and mine["currency"] == "usd"
    # local-demo.yaml: an org cap of $100, a project 600 RPM, a key cap of $10: the key cap is the tightest.
    assert mine["balance"]["nanos"] == 10 * 10**9 - mine["spend_this_period"]["nanos"]
    rpm = next(limit for limit in mine["limits"] if limit["rpm_limit"])
    assert (rpm["scope_type"], rpm["rpm_limit"], rpm["rpm_remaining"]) == ("project", 600, 599)


async def test_credit_validation(api: Api) -> None:
    for body, path in (
        ({"scope_type": "project", "scope_id": "proj-demo"}, "body"),
        ({"scope_type": "project", "scope_id": "proj-demo", "amount": "1", "amount_cents": 100}, "body"),
        ({"scope_type": "project", "scope_id": "proj-demo", "amount": "-1"}, "body.amount"),
        ({"scope_type": "project", "scope_id": "proj-demo", "amount": "0.0000000001"}, "body.amount"),
        ({"scope_type": "project", "scope_id": "proj-demo", "amount": 1.5}, "body.amount"),
        ({"scope_type": "project", "scope_id": "proj-demo", "amount_cents": 0}, "body.amount_cents"),
        ({"scope_type": "planet", "scope_id": "proj-demo", "amount": "1"}, "body.scope_type"),
    ):
        r = await api.post("/admin/credits", body)
        assert r.status_code == 422, body
        assert r.json()["error"]["details"][0]["path"] == path, (body, r.text)
    assert (
        await api.post("/admin/credits", {"scope_type": "key", "scope_id": "nope", "amount": "1"})
    ).status_code == 404
    zero = await api.post("/admin/credits", {"scope_type": "key", "scope_id": "demo-key", "amount": "0"})
    assert zero.status_code == 422
    assert (await api.get("/admin/ledger", params={"cursor": "xx"})).status_code == 422


async def test_balance_needs_a_gateway_key(api: Api) -> None:
    r = await api.http.get("/api/balance")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_credential"
    credential = await issue_key_credential(api)
    await api.post("/admin/keys/demo-key/suspend")
    r = await api.http.get("/api/balance", headers=bearer(credential))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "key_suspended")
