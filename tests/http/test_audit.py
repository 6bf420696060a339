"""Every kind of admin action over HTTP is an audit event read back from the ledger (`kind=admin`): who did it
(the admin token), what (action and target) and the values before and after."""

from __future__ import annotations

from typing import Any

from tests.http.conftest import Api, admin_token, bearer, two_org_manifest
from tests.support.gateway import edit_manifest


async def admin_entries(api: Api, token: str | None = None) -> list[dict[str, Any]]:
    """Every admin ledger entry the token may read, oldest first, paging through `next_cursor`."""
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"kind": "admin", "limit": 7, **({"cursor": cursor} if cursor else {})}
        page = await api.get("/admin/ledger", token, params=params)
        assert page.status_code == 200, page.text
        entries += page.json()["data"]
        if (cursor := page.json()["next_cursor"]) is None:
            return entries


def ok(reply: Any) -> dict[str, Any]:
    assert reply.status_code in (200, 201), reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_every_admin_action_is_on_the_ledger_with_who_what_before_and_after(api: Api) -> None:
    root = f"admin-token:{api.root.split('.')[0]}"
    demo = admin_token("demo")
    demo_actor = f"admin-token:{demo.split('.')[0]}"

    # tenancy
    project = {"organization": "demo", "project_id": "proj-audit", "project_slug": "audit", "project_name": "Audit"}
    ok(await api.post("/admin/projects", project))
    ok(await api.patch("/admin/projects/proj-audit", {"project_name": "Audited"}))
    ok(await api.post("/admin/clients", {"project_id": "proj-audit", "client_id": "client-audit", "client_name": "A"}))
    ok(await api.patch("/admin/clients/client-audit", {"default_tag": "audit"}))
    # quotas
    quota = ok(await api.post("/admin/quotas", {"scope_type": "project", "scope_id": "proj-audit", "rpm_limit": 5}))
    ok(await api.patch(f"/admin/quotas/{quota['quota_id']}", {"rpm_limit": 7}))
    ok(await api.delete(f"/admin/quotas/{quota['quota_id']}"))
    # credits
    credit = ok(await api.post("/admin/credits", {"scope_type": "project", "scope_id": "proj-audit", "amount": "2.5"}))
    # upstreams
    ok(await api.put("/admin/upstreams/openai/credential", {"api_key": "sk-audited-secret-value"}))
    # manifest apply
    renamed = edit_manifest(two_org_manifest(), lambda d: d["organizations"][1].update(organization_name="Renamed"))
    ok(await api.http.post("/admin/manifest/apply", content=renamed, headers=bearer(api.root)))
    # keys (by the organization's own admin)
    ok(await api.post("/admin/keys", {"client_id": "client-audit", "key_id": "audit-key"}, demo))
    ok(await api.post("/admin/keys/audit-key/suspend", token=demo))
    ok(await api.post("/admin/keys/audit-key/resume", token=demo))
    ok(await api.post("/admin/keys/audit-key/rotate", {"grace_seconds": 60}, demo))
    ok(await api.post("/admin/keys/audit-key/revoke", token=demo))
    # sub-accounts
    sa = ok(await api.post("/v1/sub-accounts", {"name": "audited", "spend_cap_cents": 100}, demo))
    ok(await api.patch(f"/v1/sub-accounts/{sa['id']}", {"spend_cap_cents": 250}, demo))
    ok(await api.delete(f"/v1/sub-accounts/{sa['id']}", demo))
    # alerts
    ok(await api.put("/admin/alerts/receivers/ops", {"format": "slack", "url": "https://hooks.example/a"}, demo))
    ok(await api.delete("/admin/alerts/receivers/ops", demo))

    entries = [e for e in await admin_entries(api) if e["data"]["actor"] != "test"]  # "test": the fixture's setup
    got = [(e["data"]["actor"], e["data"]["action"], e["data"]["target_id"]) for e in entries]
    assert got == [
        (root, "project.create", "proj-audit"),
        (root, "project.update", "proj-audit"),
        (root, "client.create", "client-audit"),
        (root, "client.update", "client-audit"),
        (root, "quota.create", quota["quota_id"]),
        (root, "quota.update", quota["quota_id"]),
        (root, "quota.update", quota["quota_id"]),
        (root, "credit.add", "project:proj-audit"),
        (root, "upstream.set_key", "openai"),
        (f"{root} manifest", "manifest.update", "org-other"),
        (demo_actor, "key.create", "audit-key"),
        (demo_actor, "key.issue", "audit-key"),  # a key created here gets its secret at once
        (demo_actor, "key.suspend", "audit-key"),
        (demo_actor, "key.resume", "audit-key"),
        (demo_actor, "key.rotate", "audit-key"),
        (demo_actor, "key.revoke", "audit-key"),
        (demo_actor, "key.issue", sa["key_id"]),  # the sub-account's key, then the sub-account
        (demo_actor, "sub_account.create", sa["id"]),
        (demo_actor, "sub_account.update", sa["id"]),
        (demo_actor, "key.revoke", sa["key_id"]),
        (demo_actor, "sub_account.revoke", sa["id"]),
        (demo_actor, "alert_receivers.put", "org-demo:ops"),
        (demo_actor, "alert_receiver.disable", "org-demo:ops"),
    ]

    def change(action: str, nth: int = 0) -> tuple[Any, Any]:
        """(before, after) of the nth event of `action`."""
        entry = [e["data"] for e in entries if e["data"]["action"] == action][nth]
        return entry["before"], entry["after"]

    before, after = change("project.create")
    assert before is None and (after["project_name"], after["organization_id"]) == ("Audit", "org-demo")
    assert [list(x.values()) for x in change("project.update")] == [["Audit"], ["Audited"]]
    assert change("client.update") == ({"default_tag": None}, {"default_tag": "audit"})
    assert change("quota.update", 0) == ({"rpm_limit": 5}, {"rpm_limit": 7})
    assert change("quota.update", 1) == ({"status": "active"}, {"status": "disabled"})
    assert change("credit.add")[1] == {"amount_nanos": 2_500_000_000, "seq": credit["seq"], "note": None}
    assert change("upstream.set_key")[1] == {"source": "stored", "version": 1}
    assert change("manifest.update") == ({"name": "Other Org"}, {"name": "Renamed"})
    assert change("key.suspend") == ({"status": "active"}, {"status": "suspended"})
    assert change("key.resume") == ({"status": "suspended"}, {"status": "active"})
    assert change("key.rotate")[1] == {"grace_seconds": 60}
    assert change("key.revoke", 0) == ({"status": "active"}, {"status": "revoked"})
    assert change("sub_account.update") == ({"spend_cap_nanos": 10**9}, {"spend_cap_nanos": 25 * 10**8})
    assert change("sub_account.revoke") == ({"status": "active"}, {"status": "revoked"})
    assert change("alert_receivers.put")[0] is None
    assert change("alert_receivers.put")[1]["url"] == "https://hooks.example/a"
    assert change("alert_receiver.disable") == ({"status": "active"}, {"status": "disabled"})
    assert "sk-audited-secret-value" not in repr(entries)
    # Each is a ledger entry of its organization's chain (the operator's chain for the provider key).
    chains = {e["data"]["action"]: e["organization_id"] for e in entries}
    assert chains["upstream.set_key"] == "_global" and chains["key.create"] == chains["credit.add"] == "org-demo"
    assert all(e["ref"].startswith("audit:") and e["amount_nanos"] == 0 for e in entries)

    # An organization admin reads its own organization's events, and only those.
    own = await admin_entries(api, demo)
    assert own and {e["organization_id"] for e in own} == {"org-demo"}
    assert [e["id"] for e in own] == [e["id"] for e in await admin_entries(api) if e["organization_id"] == "org-demo"]
