"""Seed 004: one POST per customer mints a capped, rate-limited, tagged key; the cap holds before dispatch;
PATCH raises it; usage per sub-account equals the stored events and the ledger exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quotagate.app import open_app
from quotagate.gateway.outcome import Allow
from quotagate.store.tables import AdminAuditEvent, LedgerEntry, UsageEvent
from tests.http.conftest import Api, admin_token, bearer, call_gateway, denial, stored, two_org_manifest

SEED = {"name": "acme-corp", "spend_cap_cents": 1, "rate_limit_rpm": 300, "default_tag": "acme", "organization": "demo"}
# gpt-4o-mini: $0.60 per 1M output tokens, so 20,000 reserved output tokens cost 1.2 cents (over a 1-cent cap).
BIG = 20_000


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    r = await api.post("/v1/sub-accounts", {**SEED, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_seed_004_flow(api_db: Api) -> None:
    api, rt = api_db, api_db.runtime
    sa = await create(api)
    assert sa["id"].startswith("sa-") and sa["key"].startswith(sa["key_id"] + ".")
    assert (sa["spend_cap_cents"], sa["rate_limit_rpm"], sa["default_tag"], sa["status"]) == (1, 300, "acme", "active")
    assert sa["organization_id"] == "org-demo" and sa["project_id"] == "org-demo.sub-accounts"
    key = sa["key"]

    # The cap is enforced before dispatch: the worst case of this request does not fit under 1 cent.
    refused = denial(await call_gateway(rt, key, max_tokens=BIG))
    assert refused["error"]["code"] == "insufficient_quota"
    assert "acme-corp" in refused["error"]["message"]

    raised = await api.patch(f"/v1/sub-accounts/{sa['id']}", {"spend_cap_cents": 1000})
    assert raised.status_code == 200 and raised.json()["spend_cap_cents"] == 1000
    honoured = await call_gateway(rt, key, max_tokens=BIG, usage=(12, 34))
    assert isinstance(honoured, Allow)
    stored(rt)

    usage = (await api.get(f"/v1/sub-accounts/{sa['id']}/usage", params={"window": "30d"})).json()
    app = open_app()
    with app.db.read() as session:
        event = session.get_one(UsageEvent, honoured.ticket.request_id)
        debit = session.query(LedgerEntry).filter_by(kind="usage", ref=event.request_id).one()
        actions = [a.action for a in session.query(AdminAuditEvent).filter_by(target_id=sa["id"])]
    app.close()
    assert event.tags == {"tag": "acme"} and event.client_id == sa["id"]
    assert usage["summary"]["requests"] == 1
    assert (usage["summary"]["input_tokens"], usage["summary"]["output_tokens"]) == (12, 34)
    assert usage["summary"]["cost_nanos"] == event.cost_nanos == -debit.amount_nanos > 0
    assert usage["summary"]["cost_cents"] == str(event.cost_nanos / 10**7).rstrip("0").rstrip(".")
    [by_model] = usage["by_model"]
    assert by_model["model_id"] == "openai/gpt-4o-mini" and by_model["cost_nanos"] == event.cost_nanos
    [by_day] = usage["by_day"]
    assert by_day["date"] == datetime.now(UTC).strftime("%Y-%m-%d") and by_day["requests"] == 1
    assert actions == ["sub_account.create", "sub_account.update"]

    got = (await api.get(f"/v1/sub-accounts/{sa['id']}")).json()
    assert "key" not in got and got["key_status"] == "active"
    assert [s["id"] for s in (await api.get("/v1/sub-accounts")).json()["data"]] == [sa["id"]]

    suspended = await api.patch(f"/v1/sub-accounts/{sa['id']}", {"status": "suspended"})
    assert suspended.json()["status"] == "suspended"
    assert denial(await call_gateway(rt, key, usage=None))["error"]["code"] == "client_disabled"
    await api.patch(f"/v1/sub-accounts/{sa['id']}", {"status": "active"})
    assert isinstance(await call_gateway(rt, key, usage=None), Allow)

    revoked = await api.delete(f"/v1/sub-accounts/{sa['id']}")
    assert revoked.status_code == 200
    assert (revoked.json()["status"], revoked.json()["key_status"]) == ("revoked", "revoked")
    assert denial(await call_gateway(rt, key, usage=None))["error"]["code"] == "key_revoked"
    assert (await api.patch(f"/v1/sub-accounts/{sa['id']}", {"spend_cap_cents": 5})).status_code == 409
    assert (await api.delete(f"/v1/sub-accounts/{sa['id']}")).status_code == 200  # repeating changes nothing
    again = (await api.get(f"/v1/sub-accounts/{sa['id']}/usage")).json()
    assert again["summary"] == usage["summary"]  # history stays


async def test_rate_limit_models_and_tpm(api: Api) -> None:
    rt = api.runtime
    sa = await create(api, spend_cap_cents=10_000, rate_limit_rpm=1, models=["openai/gpt-5.4"], tpm=1_000_000)
    assert sa["models"] == ["openai/gpt-5.4"] and sa["tpm"] == 1_000_000
    assert denial(await call_gateway(rt, sa["key"], usage=None))["error"]["code"] == "model_not_allowed"
    models = (await api.http.get("/v1/models", headers=bearer(sa["key"]))).json()
    assert [m["id"] for m in models["data"]] == ["gpt-5.4", "openai/gpt-5.4"]
    assert isinstance(await call_gateway(rt, sa["key"], model="gpt-5.4", usage=None), Allow)
    assert denial(await call_gateway(rt, sa["key"], model="gpt-5.4", usage=None))["error"]["code"] == "rate_limit_rpm"

    cleared = await api.patch(f"/v1/sub-accounts/{sa['id']}", {"models": None, "rate_limit_rpm": None})
    assert (cleared.json()["models"], cleared.json()["rate_limit_rpm"]) == (None, None)
    assert isinstance(await call_gateway(rt, sa["key"], usage=None), Allow)


async def test_projects_and_manifest_apply_leave_sub_accounts_alone(api: Api) -> None:
    sa = await create(api, project_id="proj-demo")
    assert sa["project_id"] == "proj-demo"
    assert (await api.post("/v1/sub-accounts", {**SEED, "project_id": "proj-other"})).status_code == 404
    default = await create(api)
    assert default["project_id"] == "org-demo.sub-accounts"
    assert (await create(api))["project_id"] == default["project_id"]  # one default project per organization

    applied = await api.http.post("/admin/manifest/apply", content=two_org_manifest(), headers=bearer(api.root))
    assert applied.status_code == 200, applied.text
    assert not [c for c in applied.json()["changes"] if c["action"] == "disable"]
    assert (await api.get(f"/v1/sub-accounts/{sa['id']}")).json()["status"] == "active"
    assert isinstance(await call_gateway(api.runtime, sa["key"], usage=None), Allow)


async def test_idempotency_key(api: Api) -> None:
    headers = {"Idempotency-Key": "signup-42"}
    first = await api.post("/v1/sub-accounts", SEED, headers=headers)
    second = await api.post("/v1/sub-accounts", SEED, headers=headers)
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
    assert second.json() == {**first.json(), "key": None}  # the one-time secret is never stored
    assert len((await api.get("/v1/sub-accounts")).json()["data"]) == 1

    clash = await api.post("/v1/sub-accounts", {**SEED, "name": "other"}, headers=headers)
    assert (clash.status_code, clash.json()["error"]["code"]) == (409, "conflict")
    # Keys are per admin token: another actor's identical key is a different request.
    scoped = await api.post("/v1/sub-accounts", {**SEED, "organization": None}, admin_token("demo"), headers=headers)
    assert scoped.status_code == 201 and scoped.json()["id"] != first.json()["id"]


async def test_pagination(api: Api) -> None:
    ids = {(await create(api, name=f"customer-{i}"))["id"] for i in range(5)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/sub-accounts", params=params)).json()
        seen += [s["id"] for s in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == sorted(ids)
    bad = await api.get("/v1/sub-accounts", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert bad.status_code == 422 and bad.json()["error"]["details"] == [
        {"path": "query.cursor", "message": "invalid cursor"}
    ]
    assert (await api.get("/v1/sub-accounts", params={"limit": 0})).status_code == 422


async def test_validation_errors_name_their_paths(api: Api) -> None:
    async def problems(method: str, path: str, body: Any, token: str | None = None) -> list[dict[str, str]]:
        r = await api.http.request(method, path, json=body, headers=bearer(token or api.root))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        details: list[dict[str, str]] = error.get("details") or [{"path": "", "message": error["message"]}]
        return details

    found = await problems("POST", "/v1/sub-accounts", {"spend_cap_cents": -1, "rate_limt_rpm": 5})
    assert {p["path"]: p["message"] for p in found} == {
        "body.name": "required field is missing",
        "body.spend_cap_cents": "Input should be greater than or equal to 0",
        "body.rate_limt_rpm": "unknown field",
    }
    assert (await problems("POST", "/v1/sub-accounts", {"name": "x", "spend_cap_cents": 1}))[0]["message"] == (
        "A global admin token must name the 'organization'."
    )
    unknown_model = await problems("POST", "/v1/sub-accounts", {**SEED, "models": ["gpt-99"]})
    assert "model 'gpt-99' has no rate in the active rate card" in unknown_model[0]["message"]
    sa = await create(api)
    assert (await problems("PATCH", f"/v1/sub-accounts/{sa['id']}", {"spend_cap_cents": None}))[0] == {
        "path": "body.spend_cap_cents",
        "message": "may not be null",
    }
    assert (await problems("PATCH", f"/v1/sub-accounts/{sa['id']}", {"status": "revoked"}))[0]["path"] == "body.status"
    assert (await problems("GET", f"/v1/sub-accounts/{sa['id']}/usage?window=400d", None))[0]["path"] == "query.window"
    not_json = await api.http.post(
        "/v1/sub-accounts", content=b"{not json", headers={**bearer(api.root), "content-type": "application/json"}
    )
    assert not_json.status_code == 422
    assert (await api.get("/v1/sub-accounts/sa-missing")).status_code == 404
