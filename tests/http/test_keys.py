"""Gateway keys over HTTP: create (credential once), list without secrets, issue, rotate with grace,
suspend, resume, revoke; each change is enforced by the gateway before the response returns."""

from __future__ import annotations

from quotagate.app import open_app
from quotagate.gateway.outcome import Allow
from quotagate.store.tables import AdminAuditEvent
from tests.http.conftest import Api, call_gateway, denial


async def test_key_lifecycle(api_db: Api) -> None:
    api, rt = api_db, api_db.runtime
    created = await api.post(
        "/admin/keys", {"client_id": "client-demo", "key_id": "ci-bot", "tier": "ci", "models": ["gpt-4o-mini"]}
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["credential"].startswith("ci-bot.") and key["issued"] and key["managed_by"] == "api"
    assert (key["organization_id"], key["project_id"], key["models"]) == ("org-demo", "proj-demo", ["gpt-4o-mini"])
    credential = key["credential"]
    assert isinstance(await call_gateway(rt, credential, usage=None), Allow)
    assert denial(await call_gateway(rt, credential, model="gpt-5.4", usage=None))["error"]["code"] == (
        "model_not_allowed"
    )

    listing = await api.get("/admin/keys", params={"organization": "demo"})
    text = listing.text
    assert credential.split(".", 1)[1] not in text and "secret_hash" not in text and "credential" not in text
    assert [k["key_id"] for k in listing.json()["data"]] == ["ci-bot", "demo-key"]
    assert [k["key_id"] for k in (await api.get("/admin/keys", params={"status": "active"})).json()["data"]] == [
        "ci-bot",
        "demo-key",
        "other-key",
    ]

    for verb, code in (("suspend", "key_suspended"), ("resume", None), ("revoke", "key_revoked")):
        r = await api.post(f"/admin/keys/ci-bot/{verb}")
        assert r.status_code == 200, r.text
        outcome = await call_gateway(rt, credential, usage=None)
        if code is None:
            assert isinstance(outcome, Allow)
        else:
            assert denial(outcome)["error"]["code"] == code
    assert (await api.post("/admin/keys/ci-bot/resume")).status_code == 409  # revocation is final
    assert (await api.post("/admin/keys/ci-bot/rotate")).status_code == 409
    assert (await api.post("/admin/keys", {"client_id": "client-demo", "key_id": "ci-bot"})).status_code == 409

    app = open_app()
    with app.db.read() as session:
        actions = [e.action for e in session.query(AdminAuditEvent).filter_by(target_id="ci-bot").order_by("id")]
    app.close()
    assert actions == ["key.create", "key.issue", "key.suspend", "key.resume", "key.revoke"]


async def test_issue_and_rotate_with_grace(api: Api) -> None:
    rt = api.runtime
    issued = await api.post("/admin/keys/demo-key/issue")
    assert issued.status_code == 200, issued.text
    old = issued.json()["credential"]
    assert isinstance(await call_gateway(rt, old, usage=None), Allow)

    rotated = await api.post("/admin/keys/demo-key/rotate", {"grace_seconds": 600})
    new = rotated.json()["credential"]
    assert new != old and rotated.json()["previous_valid_until"] is not None
    assert isinstance(await call_gateway(rt, new, usage=None), Allow)
    assert isinstance(await call_gateway(rt, old, usage=None), Allow)  # within the grace period

    await api.post("/admin/keys/demo-key/rotate", {"grace_seconds": 0})
    assert denial(await call_gateway(rt, new, usage=None))["error"]["code"] == "invalid_credential"
    bad = await api.post("/admin/keys/demo-key/rotate", {"grace_seconds": -1})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["path"] == "body.grace_seconds"
    past = await api.post("/admin/keys/demo-key/issue", {"expires_at": "2000-01-01T00:00:00Z"})
    assert past.status_code == 422
    assert (await api.post("/admin/keys/nope/issue")).status_code == 404


async def test_create_is_idempotent(api: Api) -> None:
    body = {"client_id": "client-demo"}
    headers = {"Idempotency-Key": "k-1"}
    first = await api.post("/admin/keys", body, headers=headers)
    replay = await api.post("/admin/keys", body, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == {**first.json(), "credential": None}
    assert replay.headers["idempotent-replayed"] == "true"
    assert (await api.post("/admin/keys", {"client_id": "client-other"}, headers=headers)).status_code == 409
    keys = (await api.get("/admin/keys", params={"client_id": "client-demo"})).json()["data"]
    assert len(keys) == 2  # demo-key and the one created once
