"""Admin tokens (CLI and HTTP), organization isolation, and the wall between admin tokens and gateway keys."""

from __future__ import annotations

import json

import pytest

from quotagate.cli.main import main
from quotagate.gateway.outcome import Deny
from quotagate.store.keys_repo import issue_key
from tests.http.conftest import Api, admin_token, apply, bearer, call_gateway, two_org_manifest
from tests.support.gateway import issue_key as issue_gateway_key


def test_admin_token_cli_issue_list_revoke(capsys: pytest.CaptureFixture[str]) -> None:
    apply(two_org_manifest())
    assert main(["admin-token", "issue", "--org", "demo", "--name", "demo ops", "--json"]) == 0
    issued = json.loads(capsys.readouterr().out)
    token_id, secret = issued["token"].split(".", 1)
    assert token_id == issued["token_id"] and token_id.startswith("qga-") and len(secret) >= 43
    assert issued["organization"] == "demo" and issued["name"] == "demo ops"

    assert main(["admin-token", "issue"]) == 0
    global_token = capsys.readouterr().out.strip()

    assert main(["admin-token", "list", "--json"]) == 0
    listing = capsys.readouterr().out
    assert secret not in listing and global_token.split(".", 1)[1] not in listing
    rows = {row["token_id"]: row for row in json.loads(listing)}
    assert rows[token_id]["organization"] == "demo"
    assert rows[global_token.split(".", 1)[0]]["organization"] is None

    assert main(["admin-token", "revoke", token_id]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["admin-token", "issue", "--org", "nope"]) == 3  # NotFoundError
    assert "no organization 'nope'" in capsys.readouterr().err


async def test_missing_malformed_wrong_and_revoked_tokens_get_401(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    r = await api.http.get("/admin/organizations")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {
        "error": {
            "type": "authentication_error",
            "code": "missing_credential",
            "message": "Send an admin token as 'Authorization: Bearer <token>'.",
        }
    }
    token_id = api.root.split(".", 1)[0]
    for bad in ("garbage", f"{token_id}.{'A' * 43}", f"qga-0000000000000000.{'A' * 43}"):
        r = await api.http.get("/admin/organizations", headers=bearer(bad))
        assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_admin_token")

    doomed = admin_token()
    assert (await api.get("/admin/me", doomed)).status_code == 200
    assert main(["admin-token", "revoke", doomed.split(".", 1)[0]]) == 0
    capsys.readouterr()
    assert (await api.get("/admin/me", doomed)).status_code == 401


async def test_me_shows_the_scope(api: Api) -> None:
    me = (await api.get("/admin/me")).json()
    assert me["organization_id"] is None and me["name"] == "global admin"
    scoped = (await api.get("/admin/me", admin_token("other"))).json()
    assert scoped["organization_id"] == "org-other" and scoped["name"] == "other admin"


async def test_gateway_keys_and_admin_tokens_never_cross(api: Api) -> None:
    gateway_key = issue_gateway_key("demo-key")
    # A gateway key is not an admin token...
    r = await api.http.get("/admin/organizations", headers=bearer(gateway_key))
    assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_admin_token")
    # ...and an admin token is not a gateway key: not for the portal, not for the gateway itself.
    for path in ("/v1/models", "/api/balance"):
        r = await api.http.get(path, headers=bearer(api.root))
        assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_credential")
        r = await api.http.get(path, headers={"x-api-key": api.root})
        assert r.status_code == 401
    outcome = await call_gateway(api.runtime, api.root, usage=None)
    assert isinstance(outcome, Deny) and outcome.reason == "invalid_credential"


async def test_an_admin_token_hash_never_verifies_as_a_gateway_key(api: Api) -> None:
    """Even a gateway key whose id equals an admin token's id, holding the admin token's secret, is refused:
    admin-token hashes are computed over a different message."""
    from quotagate.app import open_app
    from quotagate.store.tables import AdminToken, GatewayKey

    app = open_app()
    token_id, secret = api.root.split(".", 1)
    with app.db.transaction(immediate=True) as session:
        admin_hash = session.get_one(AdminToken, token_id).secret_hash
        demo = session.get_one(GatewayKey, "demo-key")
        issue_key(session, app.hasher, "demo-key", actor="test")
        demo.secret_hash = admin_hash  # a hash copied across tables
    app.close()
    await api.runtime.config.refresh()
    outcome = await call_gateway(api.runtime, f"demo-key.{secret}", usage=None)
    assert isinstance(outcome, Deny) and outcome.reason == "invalid_credential"


async def test_an_organization_admin_sees_only_its_organization(api: Api) -> None:
    other = admin_token("other")
    created = await api.post(
        "/v1/sub-accounts", {"name": "acme", "spend_cap_cents": 100, "organization": "demo"}, headers={}
    )
    assert created.status_code == 201, created.text
    sa = created.json()

    orgs = (await api.get("/admin/organizations", other)).json()["data"]
    assert [o["organization_slug"] for o in orgs] == ["other"]
    assert [o["organization_slug"] for o in (await api.get("/admin/organizations")).json()["data"]] == ["demo", "other"]

    hidden = [
        ("GET", "/admin/organizations/demo"),
        ("GET", "/admin/organizations/org-demo"),
        ("GET", "/admin/projects/proj-demo"),
        ("PATCH", "/admin/projects/proj-demo"),
        ("DELETE", "/admin/projects/proj-demo"),
        ("GET", "/admin/clients/client-demo"),
        ("DELETE", "/admin/clients/client-demo"),
        ("GET", "/admin/keys/demo-key"),
        ("POST", "/admin/keys/demo-key/suspend"),
        ("POST", "/admin/keys/demo-key/revoke"),
        ("POST", "/admin/keys/demo-key/rotate"),
        ("POST", "/admin/keys/demo-key/issue"),
        ("GET", f"/v1/sub-accounts/{sa['id']}"),
        ("PATCH", f"/v1/sub-accounts/{sa['id']}"),
        ("DELETE", f"/v1/sub-accounts/{sa['id']}"),
        ("GET", f"/v1/sub-accounts/{sa['id']}/usage"),
        ("GET", "/admin/projects?organization=demo"),
        ("GET", "/admin/ledger?organization=demo"),
        ("GET", "/admin/usage?organization=demo"),
    ]
    for method, path in hidden:
        body = {} if method == "PATCH" else None
        r = await api.http.request(method, path, json=body, headers=bearer(other))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), (method, path, r.text)

    refs = [
        ("/admin/credits", {"scope_type": "project", "scope_id": "proj-demo", "amount": "1"}),
        ("/admin/quotas", {"scope_type": "key", "scope_id": "demo-key", "rpm_limit": 1}),
        ("/admin/keys", {"client_id": "client-demo"}),
        ("/admin/clients", {"project_id": "proj-demo", "client_id": "sneaky", "client_name": "x"}),
        ("/admin/projects", {"organization": "demo", "project_id": "p2", "project_slug": "p2", "project_name": "x"}),
        ("/v1/sub-accounts", {"name": "x", "spend_cap_cents": 1, "organization": "demo"}),
    ]
    for path, body in refs:
        r = await api.post(path, body, other)
        assert r.status_code == 404, (path, r.text)

    own = await api.post("/v1/sub-accounts", {"name": "mine", "spend_cap_cents": 5}, other)
    assert own.status_code == 201 and own.json()["organization_id"] == "org-other"
    for listing in ("/v1/sub-accounts", "/admin/keys", "/admin/clients", "/admin/projects", "/admin/quotas"):
        data = (await api.get(listing, other)).json()["data"]
        assert data and all(item["organization_id"] == "org-other" for item in data), listing
    ledger = (await api.get("/admin/ledger", other)).json()["data"]
    assert all(e["organization_id"] == "org-other" for e in ledger)


async def test_global_only_endpoints_refuse_organization_admins(api: Api) -> None:
    """The deployment and the organization itself (record, quotas, credits) are the operator's: an organization
    admin manages what is inside its organization and cannot lift limits set on it."""
    other = admin_token("other")
    org_quota = next(
        q["quota_id"]
        for q in (await api.get("/admin/quotas", other)).json()["data"]
        if q["scope_type"] == "organization"
    )
    for method, path, body in (
        (
            "POST",
            "/admin/organizations",
            {"organization_id": "o3", "organization_slug": "o3", "organization_name": "x"},
        ),
        ("PATCH", "/admin/organizations/other", {"status": "active"}),
        ("PATCH", "/admin/organizations/demo", {"status": "active"}),
        ("DELETE", "/admin/organizations/other", None),
        ("PUT", "/admin/upstreams/openai/credential", {"api_key": "sk-x"}),
        ("POST", "/admin/credits", {"scope_type": "organization", "scope_id": "other", "amount": "1"}),
        ("POST", "/admin/quotas", {"scope_type": "organization", "scope_id": "other", "rpm_limit": 1}),
        ("PATCH", f"/admin/quotas/{org_quota}", {"rpm_limit": 10**6}),
        ("DELETE", f"/admin/quotas/{org_quota}", None),
    ):
        r = await api.http.request(method, path, json=body, headers=bearer(other))
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), (method, path, r.text)
    for path in ("/admin/manifest/plan", "/admin/manifest/apply"):
        r = await api.http.post(path, content=two_org_manifest(), headers=bearer(other))
        assert r.status_code == 403
    # What is inside the organization is the organization admin's.
    credit = await api.post("/admin/credits", {"scope_type": "project", "scope_id": "proj-other", "amount": "1"}, other)
    assert credit.status_code == 201
    quota = await api.post("/admin/quotas", {"scope_type": "project", "scope_id": "proj-other", "rpm_limit": 5}, other)
    assert quota.status_code == 201
    assert (await api.delete(f"/admin/quotas/{quota.json()['quota_id']}", other)).status_code == 200
