"""The dashboard's endpoints: usage over time, breakdowns, recent requests, caps, credits and key activity,
each within the caller's scope (an organization admin its organization, a gateway key its own requests)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quotagate.app import open_app
from quotagate.gateway.outcome import Allow
from quotagate.http.paging import encode
from quotagate.store.tables import UsageEvent
from tests.http.conftest import Api, admin_token, bearer, call_gateway, denial, issue_key_credential, stored


async def seed(api: Api) -> tuple[str, str]:
    """Three admitted and one refused request on demo-key, one admitted on other-key (another organization)."""
    rt = api.runtime
    demo = await issue_key_credential(api)
    other = await issue_key_credential(api, "other-key")
    for credential, model, usage in (
        (demo, "gpt-4o-mini", (100, 20)),
        (demo, "gpt-5.4", (1234, 567)),
        (demo, "gpt-5.4", (1, 1)),
        (other, "gpt-5.4-mini", (999, 333)),
    ):
        assert isinstance(await call_gateway(rt, credential, model=model, usage=usage), Allow)
    refused = denial(await call_gateway(rt, credential=demo, model="no-such-model", usage=None))
    assert refused["error"]["code"] == "model_not_found"
    stored(rt)
    return demo, other


def events() -> list[UsageEvent]:
    app = open_app()
    with app.db.read() as session:
        rows = list(session.query(UsageEvent))
    app.close()
    return rows


async def test_summary_series_and_requests_for_an_organization_admin(api_db: Api) -> None:
    api = api_db
    await seed(api)
    demo_events = [e for e in events() if e.organization_id == "org-demo"]
    demo_cost = sum(e.cost_nanos for e in demo_events)
    org_admin = admin_token("demo")

    summary = (await api.get("/admin/activity/summary", org_admin, params={"window": "24h"})).json()
    totals = summary["totals"]
    assert (totals["requests"], totals["denied"]) == (3, 1)
    assert totals["input_tokens"] == 100 + 1234 + 1 and totals["output_tokens"] == 20 + 567 + 1
    assert totals["cost_nanos"] == demo_cost > 0 and totals["avg_latency_ms"] is not None
    by_model = [(r["id"], r["requests"], r["denied"]) for r in summary["by_model"]]
    assert by_model == [("gpt-5.4", 2, 0), ("gpt-4o-mini", 1, 0), ("no-such-model", 0, 1)]
    assert summary["by_model"][0]["cost_nanos"] > summary["by_model"][1]["cost_nanos"]
    [project] = summary["by_project"]
    assert (project["id"], project["slug"], project["name"]) == ("proj-demo", "demo-app", "Demo app")
    [client] = summary["by_client"]
    assert (client["id"], client["name"], client["client_type"]) == ("client-demo", "Demo developer", "gateway_key")
    [key] = summary["by_key"]
    assert (key["id"], key["client_name"], key["project"], key["denied"]) == (
        "demo-key",
        "Demo developer",
        "demo-app",
        1,
    )
    assert [(r["id"], r["denied"], r["cost_nanos"]) for r in summary["blocked_by_reason"]] == [
        ("model_not_found", 1, 0)
    ]

    series = (await api.get("/admin/activity/series", org_admin, params={"window": "24h", "bucket": "hour"})).json()
    assert len(series["points"]) in (24, 25)  # every hour of the window, the current one included
    assert sum(p["requests"] for p in series["points"]) == 3 and sum(p["denied"] for p in series["points"]) == 1
    assert sum(p["cost_nanos"] for p in series["points"]) == demo_cost
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert datetime.fromisoformat(series["points"][-1]["start"]) == hour
    assert series["points"][-1]["requests"] == 3
    daily = (await api.get("/admin/activity/series", org_admin, params={"window": "7d", "bucket": "day"})).json()
    assert len(daily["points"]) in (7, 8) and daily["points"][-1]["cost"] == series["points"][-1]["cost"]

    page = (await api.get("/admin/activity/requests", org_admin, params={"limit": 3})).json()
    assert [r["decision"] for r in page["data"]] == ["denied", "allowed", "allowed"]  # newest first
    newest = page["data"][0]
    assert (newest["key_id"], newest["deny_reason"], newest["status"], newest["cost"]) == (
        "demo-key",
        "model_not_found",
        404,
        "0",
    )
    older = (await api.get("/admin/activity/requests", org_admin, params={"cursor": page["next_cursor"]})).json()
    assert len(older["data"]) == 1 and older["next_cursor"] is None
    assert {r["request_id"] for r in page["data"] + older["data"]} == {e.request_id for e in demo_events}
    allowed = (await api.get("/admin/activity/requests", org_admin, params={"decision": "allowed"})).json()
    assert {r["model"] for r in allowed["data"]} == {"gpt-5.4", "gpt-4o-mini"}
    assert all(r["latency_ms"] is not None and r["client_name"] == "Demo developer" for r in allowed["data"])

    # A global admin sees every organization, or one; an organization admin never another's.
    everything = (await api.get("/admin/activity/summary")).json()
    assert everything["totals"]["requests"] == 4
    other = (await api.get("/admin/activity/summary", params={"organization": "other"})).json()
    assert [r["id"] for r in other["by_model"]] == ["gpt-5.4-mini"]
    assert (await api.get("/admin/activity/summary", org_admin, params={"organization": "other"})).status_code == 404
    for name, value in (("key_id", "other-key"), ("client_id", "client-other"), ("project_id", "proj-other")):
        r = await api.get("/admin/activity/requests", org_admin, params={name: value})
        assert r.status_code == 404, (name, r.text)  # another organization's object does not exist here
    assert (await api.get("/admin/activity/summary", org_admin, params={"key_id": "demo-key"})).json()[
        "totals"
    ] == totals


async def test_a_gateway_key_reads_only_its_own_activity(api: Api) -> None:
    demo, other = await seed(api)
    mine = (await api.http.get("/api/activity/summary", headers=bearer(other))).json()
    assert (mine["totals"]["requests"], mine["totals"]["denied"]) == (1, 0)
    assert [r["id"] for r in mine["by_key"]] == ["other-key"] and mine["blocked_by_reason"] == []
    requests = (await api.http.get("/api/activity/requests", headers={"x-api-key": demo})).json()["data"]
    assert len(requests) == 4 and {r["key_id"] for r in requests} == {"demo-key"}
    series = (await api.http.get("/api/activity/series", headers=bearer(demo), params={"window": "2d"})).json()
    assert sum(p["requests"] for p in series["points"]) == 3

    # Each door takes only its own credential.
    assert (await api.http.get("/api/activity/summary", headers=bearer(api.root))).status_code == 401
    assert (await api.http.get("/admin/activity/summary", headers=bearer(demo))).status_code == 401
    assert (await api.http.get("/api/activity/requests")).status_code == 401


async def test_organization_balance_and_key_activity(api: Api) -> None:
    await seed(api)
    credit = await api.post("/admin/credits", {"scope_type": "project", "scope_id": "proj-demo", "amount": "25.50"})
    assert credit.status_code == 201, credit.text
    spent = sum(e.cost_nanos for e in events() if e.organization_id == "org-demo")

    balance = (await api.get("/admin/activity/balance", admin_token("demo"))).json()
    assert (balance["organization_id"], balance["organization"], balance["currency"]) == ("org-demo", "demo", "usd")
    assert balance["spend_this_period"]["nanos"] == spent
    scopes = [(limit["scope_type"], limit["scope_id"]) for limit in balance["limits"]]
    assert scopes == [("organization", "org-demo"), ("project", "proj-demo"), ("key", "demo-key")]
    org_cap = balance["limits"][0]
    assert org_cap["spend_limit"]["amount"] == "100" and org_cap["spent_this_period"]["nanos"] == spent
    [credits] = balance["credits"]
    assert (credits["scope_type"], credits["loaded"]["amount"], credits["live"]) == ("project", "25.5", False)
    assert credits["balance"]["nanos"] == 25_500_000_000  # spend before the first credit does not draw on it
    # A global admin names the organization; another organization's admin cannot.
    assert (await api.get("/admin/activity/balance")).status_code == 422
    assert (await api.get("/admin/activity/balance", params={"organization": "demo"})).json()["limits"] == balance[
        "limits"
    ]
    assert (
        await api.get("/admin/activity/balance", admin_token("other"), params={"organization": "demo"})
    ).status_code == 404

    keys = (await api.get("/admin/activity/keys", admin_token("demo"))).json()["data"]
    [key] = keys
    assert (key["key_id"], key["client_name"], key["project"], key["status"]) == (
        "demo-key",
        "Demo developer",
        "demo-app",
        "active",
    )
    assert key["requests_this_period"] == 3 and key["spend_this_period"]["nanos"] == spent
    last = max(e.started_at for e in events() if e.key_id == "demo-key")
    assert datetime.fromisoformat(key["last_used_at"]) == last
    everyone = (await api.get("/admin/activity/keys")).json()["data"]
    assert [k["key_id"] for k in everyone] == ["demo-key", "other-key"]


async def test_bad_windows_and_cursors_are_422(api: Api) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/admin/activity/series", {"window": "40d", "bucket": "hour"}),
        ("/admin/activity/series", {"window": "400d", "bucket": "day"}),
        ("/admin/activity/summary", {"window": "soon"}),
        ("/admin/activity/requests", {"cursor": "bm90LWpzb24"}),
        ("/admin/activity/requests", {"cursor": "Im5vdCBhIHRpbWV8eCI"}),
        ("/admin/activity/requests", {"cursor": encode("2026-11-22T10:00:00|some-request")}),  # no zone
        ("/admin/activity/requests", {"cursor": encode("2026-11-22T10:00:00+00:00")}),  # no request id
        ("/admin/activity/requests", {"decision": "maybe"}),
    ]
    for path, params in cases:
        r = await api.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
    empty = (await api.get("/admin/activity/summary")).json()
    assert empty["totals"]["requests"] == 0 and empty["by_model"] == [] and empty["totals"]["avg_latency_ms"] is None
