"""Usage reports (JSON and CSV), the model list, upstream credential rotation, health and the API description."""

from __future__ import annotations

import csv
import io
import logging

import pytest

from quotagate.app import open_app
from quotagate.gateway.outcome import Allow
from quotagate.store.tables import LedgerEntry
from tests.http.conftest import Api, admin_token, bearer, call_gateway, issue_key_credential, stored


async def test_usage_report_equals_the_ledger(api_db: Api) -> None:
    api, rt = api_db, api_db.runtime
    demo = await issue_key_credential(api)
    other = await issue_key_credential(api, "other-key")
    for credential, model, usage in (
        (demo, "gpt-4o-mini", (100, 20)),
        (demo, "gpt-5.4", (1234, 567)),
        (demo, "gpt-5.4", (1, 1)),
        (other, "gpt-5.4-mini", (999, 333)),
    ):
        assert isinstance(await call_gateway(rt, credential, model=model, usage=usage), Allow)
    stored(rt)
    app = open_app()
    with app.db.read() as session:
        total_debit = -sum(e.amount_nanos for e in session.query(LedgerEntry).filter_by(kind="usage"))
    app.close()
    assert total_debit > 0

    report = (await api.get("/admin/usage", params={"group_by": "org,key,model,day"})).json()
    assert report["group_by"] == ["org", "key", "model", "day"]
    assert [(r["org"], r["key"], r["model"], r["requests"]) for r in report["rows"]] == [
        ("demo", "demo-key", "gpt-4o-mini", 1),
        ("demo", "demo-key", "gpt-5.4", 2),
        ("other", "other-key", "gpt-5.4-mini", 1),
    ]
    assert report["totals"]["cost_nanos"] == total_debit == sum(r["cost_nanos"] for r in report["rows"])
    assert report["totals"]["input_tokens"] == 100 + 1234 + 1 + 999

    scoped = (await api.get("/admin/usage", admin_token("other"), params={"group_by": "model"})).json()
    assert [r["model"] for r in scoped["rows"]] == ["gpt-5.4-mini"]
    by_org = (await api.get("/admin/usage", params={"organization": "other"})).json()
    assert by_org["totals"] == scoped["totals"]

    text = (await api.get("/admin/usage", params={"group_by": "org,model", "format": "csv"})).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["org", "model", "requests"] and rows[0][-2:] == ["cost_nanos", "cost"]
    assert rows[-1][0] == "TOTAL" and int(rows[-1][-2]) == total_debit
    assert sum(int(r[-2]) for r in rows[1:-1]) == total_debit

    future = (await api.get("/admin/usage", params={"since": "2999-01-01T00:00:00Z"})).json()
    assert future["rows"] == [] and future["totals"]["requests"] == 0
    bad = await api.get("/admin/usage", params={"group_by": "org,planet"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["path"] == "query.group_by"
    assert (await api.get("/admin/usage", params={"since": "yesterday"})).status_code == 422


async def test_models_lists_what_the_key_may_use(api: Api) -> None:
    credential = await issue_key_credential(api)
    listing = await api.http.get("/v1/models", headers={"x-api-key": credential})
    assert listing.status_code == 200
    body = listing.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert {"gpt-4o-mini", "openai/gpt-4o-mini", "claude-sonnet-4-6", "anthropic/claude-sonnet-4-6"} <= set(ids)
    assert all(m["object"] == "model" and m["created"] > 0 for m in body["data"])
    assert {m["owned_by"] for m in body["data"]} == {"openai", "anthropic"}

    # A key allowlist narrows it; quotas with allowlists narrow it per scope.
    limited = (
        await api.post("/admin/keys", {"client_id": "client-demo", "models": ["anthropic/claude-haiku-4-5"]})
    ).json()
    ids = [m["id"] for m in (await api.http.get("/v1/models", headers=bearer(limited["credential"]))).json()["data"]]
    assert ids == ["claude-haiku-4-5", "anthropic/claude-haiku-4-5"]
    one = await api.http.get("/v1/models/anthropic/claude-haiku-4-5", headers=bearer(limited["credential"]))
    assert one.status_code == 200 and one.json()["owned_by"] == "anthropic"
    missing = await api.http.get("/v1/models/gpt-5.4", headers=bearer(limited["credential"]))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")
    assert (await api.http.get("/v1/models")).status_code == 401


async def test_upstream_credential_rotation(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    credential = await issue_key_credential(api)
    secret = "sk-rotated-provider-key-0123456789"
    caplog.set_level(logging.DEBUG)
    r = await api.put("/admin/upstreams/openai/credential", {"api_key": secret})
    assert r.status_code == 200 and r.json() == {"provider": "openai", "source": "stored", "version": 1}
    assert secret not in r.text
    outcome = await call_gateway(api.runtime, credential, usage=None)
    assert isinstance(outcome, Allow)
    assert ("authorization", f"Bearer {secret}") in outcome.set_headers  # used at once by this process
    second = await api.put("/admin/upstreams/openai/credential", {"api_key": secret + "-2"})
    assert second.json()["version"] == 2

    for body in ({"api_key": ""}, {"api_key": secret, "extra": secret}, {"key": secret}):
        bad = await api.put("/admin/upstreams/openai/credential", body)
        assert bad.status_code == 422 and secret not in bad.text
    bad = await api.put("/admin/upstreams/openai/credential", {"api_key": "line\nbreak"})
    assert bad.status_code == 422 and "line breaks" in bad.json()["error"]["message"]
    assert (await api.put("/admin/upstreams/mistral/credential", {"api_key": "x"})).status_code == 422
    assert secret not in caplog.text


async def test_health_and_openapi(api: Api) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok", "config_version": None, "reason": None}
    ready = (await api.http.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["config_version"] >= 1
    spec = (await api.http.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/v1/sub-accounts",
        "/v1/sub-accounts/{sa_id}/usage",
        "/v1/models",
        "/api/balance",
        "/admin/credits",
        "/admin/ledger",
        "/admin/usage",
        "/admin/keys/{key_id}/rotate",
        "/admin/upstreams/{provider}/credential",
        "/admin/manifest/apply",
    ):
        assert path in paths, path
    schemes = spec["components"]["securitySchemes"]
    assert {"AdminToken", "GatewayKey", "GatewayKeyHeader", "GatewayTokenHeader"} <= set(schemes)
    unknown = await api.http.get("/admin/nothing-here", headers=bearer(api.root))
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    wrong = await api.http.put("/v1/models")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
