"""Organizations, projects, clients and quotas over HTTP, consistent with the manifest; manifest plan/apply."""

from __future__ import annotations

from quotagate.gateway.outcome import Allow
from tests.http.conftest import Api, admin_token, bearer, call_gateway, denial, two_org_manifest
from tests.support.gateway import edit_manifest


async def test_create_update_disable_tenancy(api_db: Api) -> None:
    api, rt = api_db, api_db.runtime
    org = await api.post(
        "/admin/organizations",
        {"organization_id": "org-new", "organization_slug": "new", "organization_name": "New Org"},
    )
    assert org.status_code == 201, org.text
    assert org.json()["managed_by"] == "api" and org.json()["status"] == "active"
    dup = await api.post(
        "/admin/organizations", {"organization_id": "org-x", "organization_slug": "new", "organization_name": "x"}
    )
    assert (dup.status_code, dup.json()["error"]["code"]) == (409, "conflict")

    scoped = admin_token("new")
    project = await api.post(
        "/admin/projects", {"project_id": "p-new", "project_slug": "app", "project_name": "App"}, scoped
    )
    assert project.status_code == 201 and project.json()["organization_id"] == "org-new"
    client = await api.post(
        "/admin/clients", {"project_id": "p-new", "client_id": "c-new", "client_name": "CI"}, scoped
    )
    assert client.status_code == 201 and client.json()["client_type"] == "gateway_key"
    key = (await api.post("/admin/keys", {"client_id": "c-new"}, scoped)).json()["credential"]
    assert isinstance(await call_gateway(rt, key, usage=None), Allow)

    renamed = await api.patch("/admin/clients/c-new", {"client_name": "CI bot", "default_tag": "ci"}, scoped)
    assert (renamed.json()["client_name"], renamed.json()["default_tag"]) == ("CI bot", "ci")
    assert (await api.delete("/admin/projects/p-new", scoped)).json()["status"] == "disabled"
    assert denial(await call_gateway(rt, key, usage=None))["error"]["code"] == "project_disabled"
    await api.patch("/admin/projects/p-new", {"status": "active"}, scoped)
    assert isinstance(await call_gateway(rt, key, usage=None), Allow)
    assert (await api.delete("/admin/organizations/new")).json()["status"] == "disabled"
    assert denial(await call_gateway(rt, key, usage=None))["error"]["code"] == "organization_disabled"

    # Manifest-managed objects are read-only here: the manifest is their source of truth.
    for path, body in (
        ("/admin/organizations/demo", {"organization_name": "Renamed"}),
        ("/admin/projects/proj-demo", {"status": "suspended"}),
        ("/admin/clients/client-demo", {"client_name": "x"}),
    ):
        r = await api.patch(path, body)
        assert r.status_code == 409 and "managed by the manifest" in r.json()["error"]["message"], path
    assert (await api.patch("/admin/organizations/demo", {"organization_name": "Demo Org"})).status_code == 200
    assert (await api.get("/admin/organizations/org-demo")).json()["organization_slug"] == "demo"


async def test_quotas(api: Api) -> None:
    rt = api.runtime
    key = (await api.post("/admin/keys", {"client_id": "client-demo"})).json()["credential"]
    quota = await api.post(
        "/admin/quotas",
        {"quota_id": "ci-rpm", "scope_type": "key", "scope_id": key.split(".")[0], "rpm_limit": 1, "notes": "ci"},
    )
    assert quota.status_code == 201, quota.text
    q = quota.json()
    assert q["quota_id"] == "org-demo:ci-rpm" and q["managed_by"] == "api" and q["enforcement_mode"] == "enforce"
    assert isinstance(await call_gateway(rt, key, usage=None), Allow)
    assert denial(await call_gateway(rt, key, usage=None))["error"]["code"] == "rate_limit_rpm"

    monitored = await api.patch(f"/admin/quotas/{q['quota_id']}", {"enforcement_mode": "monitor"})
    assert monitored.json()["enforcement_mode"] == "monitor"
    assert isinstance(await call_gateway(rt, key, usage=None), Allow)

    spend = await api.post(
        "/admin/quotas",
        {
            "scope_type": "project",
            "scope_id": "proj-demo",
            "monthly_spend_limit": "12.345",
            "monthly_spend_unit": "usd",
        },
    )
    assert spend.status_code == 201, spend.text
    assert (spend.json()["monthly_spend_limit"], spend.json()["monthly_spend_nanos"]) == ("12.345", 12_345_000_000)
    listed = (await api.get("/admin/quotas", params={"scope_type": "project", "scope_id": "proj-demo"})).json()
    assert spend.json()["quota_id"] in [x["quota_id"] for x in listed["data"]]
    assert (await api.delete(f"/admin/quotas/{spend.json()['quota_id']}")).json()["status"] == "disabled"

    for body, message in (
        ({"scope_type": "project", "scope_id": "proj-demo"}, "a quota needs one of"),
        (
            {"scope_type": "project", "scope_id": "proj-demo", "monthly_spend_limit": "1"},
            "monthly_spend_unit is required",
        ),
        ({"scope_type": "project", "scope_id": "proj-demo", "model_allowlist": ["nope"]}, "no rate"),
    ):
        r = await api.post("/admin/quotas", body)
        assert r.status_code == 422 and message in r.json()["error"]["message"], r.text
    r = await api.post(
        "/admin/quotas", {"scope_type": "project", "scope_id": "proj-demo", "monthly_spend_limit": "1.0000000001"}
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["path"] == "body.monthly_spend_limit"
    assert (
        await api.post("/admin/quotas", {"scope_type": "client", "scope_id": "nope", "rpm_limit": 1})
    ).status_code == 404

    manifest_quota = next(
        x
        for x in (await api.get("/admin/quotas", params={"scope_type": "organization"})).json()["data"]
        if x["organization_id"] == "org-demo"
    )
    assert manifest_quota["managed_by"] == "manifest" and manifest_quota["monthly_spend_limit"] == "100"
    assert (await api.patch(f"/admin/quotas/{manifest_quota['quota_id']}", {"rpm_limit": 5})).status_code == 409


async def test_manifest_plan_and_apply(api: Api) -> None:
    headers = {**bearer(api.root), "content-type": "application/yaml"}
    plan = await api.http.post("/admin/manifest/plan", content=two_org_manifest(), headers=headers)
    assert plan.status_code == 200 and plan.json()["changes"] == [] and not plan.json()["applied"]

    renamed = edit_manifest(two_org_manifest(), lambda d: d["organizations"][1].update(organization_name="Renamed"))
    plan = (await api.http.post("/admin/manifest/plan", content=renamed, headers=headers)).json()
    assert [(c["action"], c["kind"], c["id"]) for c in plan["changes"]] == [("update", "organization", "org-other")]
    assert (await api.get("/admin/organizations/other")).json()["organization_name"] == "Other Org"  # plan only
    applied = (await api.http.post("/admin/manifest/apply", content=renamed, headers=headers)).json()
    assert applied["applied"] and applied["summary"] == "0 to create, 1 to change, 0 to disable"
    assert (await api.get("/admin/organizations/other")).json()["organization_name"] == "Renamed"
    again = (await api.http.post("/admin/manifest/apply", content=renamed, headers=headers)).json()
    assert again["changes"] == [] and not again["applied"]

    broken = edit_manifest(
        two_org_manifest(),
        lambda d: (
            d["organizations"][0]["quotas"][0].update(monthly_spend_limt=5),
            d["deployment"]["gateway"]["routes"][0].update(upstream="openai_typo"),
        ),
    )
    r = await api.http.post("/admin/manifest/apply", content=broken, headers=headers)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_manifest"
    assert {(p["path"], p["message"]) for p in error["details"]} >= {
        ("organizations[0].quotas[0].monthly_spend_limt", "unknown field"),
    }
    r = await api.http.post("/admin/manifest/plan", content=b"deployment: [", headers=headers)
    assert r.status_code == 422 and "invalid YAML" in r.json()["error"]["details"][0]["message"]
    r = await api.http.post("/admin/manifest/plan", content=b"\xff\xfe", headers=headers)
    assert r.status_code == 422


async def test_input_the_database_cannot_hold_is_a_422(api_db: Api) -> None:
    """PostgreSQL refuses NUL characters and far-off timestamps; they are bad input, never a server error."""
    checks = (
        ("GET", "/admin/organizations/a%00b", None, "path.organization"),
        ("GET", "/admin/ledger?kind=%00", None, "query.kind"),
        ("GET", "/admin/ledger?since=0001-01-01T00:00:00%2B05:00", None, "query.since"),
        (
            "POST",
            "/admin/projects",
            {"organization": "demo", "project_id": "p", "project_slug": "p", "project_name": "a\u0000"},
            "body.project_name",
        ),
        (
            "POST",
            "/admin/quotas",
            {
                "scope_type": "project",
                "scope_id": "proj-demo",
                "monthly_spend_limit": "99999999",
                "monthly_spend_unit": "usd",
            },
            "",
        ),
    )
    for method, path, body, where in checks:
        r = await api_db.http.request(method, path, json=body, headers=bearer(api_db.root))
        assert r.status_code == 422, (path, r.text)
        details = r.json()["error"].get("details") or [{"path": ""}]
        assert details[0]["path"] == where, r.text
