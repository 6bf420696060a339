"""Alert receivers, rules and firings over the admin API: validated by the manifest's own models, scoped to an
organization, audited, and the receiver's signing secret never returned. A rule put here fires like one from
the manifest, and survives a manifest apply; the manifest's own are read-only here."""

from __future__ import annotations

from typing import Any

import pytest

from quotagate.gateway.outcome import Allow
from quotagate.governance.alerts import AlertEvaluator
from quotagate.governance.webhooks import verify_signature
from quotagate.settings import load_settings
from tests.governance.webhook_receiver import webhook_receiver
from tests.http.conftest import Api, admin_token, apply, bearer, call_gateway, issue_key_credential, two_org_manifest
from tests.support.gateway import edit_manifest

SECRET = "alert-signing-secret-for-api-tests"
DEMO = {"organization": "demo"}


@pytest.fixture(autouse=True)
def alert_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QG_TEST_ALERT_SECRET", SECRET)


async def put(api: Api, path: str, body: Any, token: str | None = None, **params: str) -> Any:
    return await api.http.put(path, json=body, params=params or DEMO, headers=bearer(token or api.root))


async def problems(reply: Any) -> dict[str, str]:
    assert reply.status_code == 422, reply.text
    return {p["path"]: p["message"] for p in reply.json()["error"].get("details") or []} or {
        "": reply.json()["error"]["message"]
    }


async def test_receivers_are_validated_like_the_manifest_and_never_show_the_secret(api: Api) -> None:
    hook = {"format": "json", "url": "https://hooks.example/q", "signing_secret": "env:QG_TEST_ALERT_SECRET"}
    r = await put(api, "/admin/alerts/receivers/ops", hook)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["name"], got["format"], got["signed"], got["status"], got["managed_by"]) == (
        "ops",
        "json",
        True,
        "active",
        "api",
    )
    assert "signing_secret" not in got and "QG_TEST_ALERT_SECRET" not in r.text and SECRET not in r.text
    listed = await api.get("/admin/alerts/receivers", params=DEMO)
    assert [x["name"] for x in listed.json()["data"]] == ["ops"] and "QG_TEST_ALERT_SECRET" not in listed.text
    one = await api.get("/admin/alerts/receivers/ops", params=DEMO)
    assert one.json() == got

    # The manifest's rules, with their paths: a json body must be signed, a secret is an env: reference.
    assert await problems(await put(api, "/admin/alerts/receivers/ops", {"url": "https://x.example"})) == {
        "body": "a json receiver needs a signing_secret (env:VAR)"
    }
    bad = await problems(await put(api, "/admin/alerts/receivers/ops", {**hook, "signing_secret": SECRET}))
    assert list(bad) == ["body.signing_secret"]
    assert list(await problems(await put(api, "/admin/alerts/receivers/ops", {**hook, "url": "ftp://x"}))) == [
        "body.url"
    ]
    assert await problems(await put(api, "/admin/alerts/receivers/ops", {**hook, "secret": "x"})) == {
        "body.secret": "unknown field"
    }
    assert list(await problems(await put(api, "/admin/alerts/receivers/bad%20name", hook))) == ["path.name"]
    nul = await put(api, "/admin/alerts/receivers/ops", {"format": "slack", "url": "https://x.example/\u0000"})
    assert nul.status_code == 422
    assert (await api.get("/admin/alerts/receivers/ops", params=DEMO)).json() == got  # nothing changed

    # A global admin names the organization; no such receiver is a 404.
    assert (await api.get("/admin/alerts/receivers")).status_code == 422
    assert (await api.get("/admin/alerts/receivers/nope", params=DEMO)).status_code == 404

    slack = await put(api, "/admin/alerts/receivers/chat", {"format": "slack", "url": "env:QG_SLACK_URL"})
    assert slack.json()["signed"] is False and slack.json()["url"] == "env:QG_SLACK_URL"
    await put(api, "/admin/alerts/receivers/pager", {"format": "slack", "url": "https://hooks.example/p"})
    first = (await api.get("/admin/alerts/receivers", params={**DEMO, "limit": "2"})).json()
    rest = (await api.get("/admin/alerts/receivers", params={**DEMO, "cursor": first["next_cursor"]})).json()
    assert [x["name"] for x in first["data"] + rest["data"]] == ["chat", "ops", "pager"]
    assert rest["next_cursor"] is None

    disabled = await api.delete("/admin/alerts/receivers/ops?organization=demo")
    assert disabled.json()["status"] == "disabled"
    again = await put(api, "/admin/alerts/receivers/ops", hook)  # putting it again re-enables it
    assert again.json()["status"] == "active"


async def test_rules_are_validated_scoped_and_fire(api: Api) -> None:
    with webhook_receiver() as hook:
        receiver = {"format": "json", "url": hook.url, "signing_secret": "env:QG_TEST_ALERT_SECRET"}
        assert (await put(api, "/admin/alerts/receivers/hook", receiver)).status_code == 200
        # demo-key has a $10 monthly cap (examples/local-demo.yaml): alert at 10% of it.
        rule = {
            "kind": "spend_cap",
            "scope_type": "key",
            "key_id": "demo-key",
            "thresholds": [10],
            "receivers": ["hook"],
        }
        r = await put(api, "/admin/alerts/rules/key-spend", rule)
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["rule_id"], got["kind"], got["scope_type"], got["scope_id"]) == (
            "key-spend",
            "spend_cap",
            "key",
            "demo-key",
        )
        assert got["params"] == {"thresholds": [10]} and got["receivers"] == ["hook"] and got["managed_by"] == "api"

        for body, where, text in (
            ({**rule, "receivers": ["nope"]}, "", "unknown receiver(s) ['nope']"),
            ({"kind": "spend_cap", "scope_type": "project", "thresholds": [80]}, "body.project_id", "required"),
            (
                {"kind": "spend_cap", "scope_type": "project", "project_id": "proj-demo"},
                "",
                "needs an active quota with monthly_spend_limit",  # the demo project has no spend cap
            ),
            ({"kind": "credit_balance"}, "body", "needs below"),
            ({"kind": "credit_balance", "below": "1", "thresholds": [50]}, "body", "thresholds not allowed"),
            ({**rule, "thresholds": [0]}, "body.thresholds[0]", "greater than or equal to 1"),
            ({**rule, "kind": "weather"}, "body.kind", "Input should be"),
        ):
            found = await problems(await put(api, "/admin/alerts/rules/key-spend", body))
            assert text in found.get(where, ""), (body, found)
        other_key = await put(api, "/admin/alerts/rules/x", {**rule, "key_id": "other-key", "receivers": []})
        assert other_key.status_code == 404  # another organization's key
        assert (await api.get("/admin/alerts/rules/key-spend", params=DEMO)).json() == got

        # It fires like a manifest rule: one request of about $1.50 is over 10% of the cap.
        credential = await issue_key_credential(api)
        assert isinstance(await call_gateway(api.runtime, credential, model="gpt-5.4", usage=(300_000, 50_000)), Allow)
        api.runtime.writer.flush()
        evaluator = AlertEvaluator(api.runtime.app.db, load_settings(), interval_s=1)
        assert evaluator.tick() == (1, 1)
        [delivery] = hook.requests
        assert verify_signature(SECRET, delivery.body, delivery.headers["x-quotagate-signature"])

        firings = (await api.get("/admin/alerts/firings", params=DEMO)).json()
        [firing] = firings["data"]
        assert (firing["rule_id"], firing["threshold"], firing["delivered"]) == ("key-spend", "10%", True)
        assert firing["deliveries"] == [{"receiver": "hook", "status": "delivered", "attempts": 1, "error": None}]
        assert firings["next_cursor"] is None
        assert (await api.get("/admin/alerts/firings", params={"organization": "other"})).json()["data"] == []

        # The manifest leaves API rules alone; its own rules are read-only here.
        with_alerts = edit_manifest(
            two_org_manifest(),
            lambda d: d["organizations"][0].update(
                alerts={
                    "receivers": [{"name": "manifest-hook", "format": "slack", "url": "https://hooks.example/m"}],
                    "rules": [{"rule_id": "manifest-cap", "kind": "spend_cap", "thresholds": [90]}],
                }
            ),
        )
        apply(with_alerts)
        rules = (await api.get("/admin/alerts/rules", params=DEMO)).json()["data"]
        assert [(x["rule_id"], x["status"], x["managed_by"]) for x in rules] == [
            ("key-spend", "active", "api"),
            ("manifest-cap", "active", "manifest"),
        ]
        for method, path in (
            ("PUT", "/admin/alerts/rules/manifest-cap"),
            ("DELETE", "/admin/alerts/rules/manifest-cap"),
            ("DELETE", "/admin/alerts/receivers/manifest-hook"),
        ):
            body = {"kind": "spend_cap", "thresholds": [50]} if method == "PUT" else None
            r = await api.http.request(method, path, params=DEMO, json=body, headers=bearer(api.root))
            assert r.status_code == 409 and "managed by the manifest" in r.json()["error"]["message"], r.text

        # An organization admin manages its own organization's alerts without naming it.
        demo_admin = admin_token("demo")
        assert (await api.http.delete("/admin/alerts/rules/key-spend", headers=bearer(demo_admin))).json()[
            "status"
        ] == "disabled"
        assert [x["name"] for x in (await api.get("/admin/alerts/receivers", demo_admin)).json()["data"]] == [
            "hook",
            "manifest-hook",
        ]
